//! The one accept loop of every HTTP listener (master, agent, marathon-rs,
//! agora dns, agora lb): TCP accept, TLS when the listener has
//! certificates (a client's first byte tells TLS from plain text, so a
//! listener may also take plain HTTP where a flag allows it), then hyper
//! (HTTP/1.1 and HTTP/2) with each request told about its connection
//! ([`Conn`] in its extensions).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::CertificateDer;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

use crate::tls::Tls;

/// How a listener speaks.
#[derive(Clone, Debug, Default)]
pub struct Transport {
    /// Certificates: connections that begin a TLS handshake get TLS.
    pub tls: Option<Arc<Tls>>,
    /// With certificates, whether plain-text connections are served too
    /// (marked in [`Conn::tls`] so handlers can refuse them).
    pub plaintext: bool,
    /// Where each request's latency is recorded.
    pub metrics: Option<crate::metrics::HttpMetrics>,
}

impl Transport {
    /// Plain text only.
    pub fn plain() -> Transport {
        Transport {
            tls: None,
            plaintext: true,
            metrics: None,
        }
    }

    /// TLS with `tls`, and plain text too when `plaintext`.
    pub fn tls(tls: Arc<Tls>, plaintext: bool) -> Transport {
        Transport {
            tls: Some(tls),
            plaintext,
            metrics: None,
        }
    }

    /// The same, recording each request in `metrics`.
    pub fn with_metrics(mut self, metrics: crate::metrics::HttpMetrics) -> Transport {
        self.metrics = Some(metrics);
        self
    }

    /// `https` or `http`: what clients should dial.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }
}

/// The connection a request came on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conn {
    /// The client's address.
    pub peer: std::net::SocketAddr,
    /// This server's address on the connection.
    pub local: std::net::SocketAddr,
    /// Whether it is TLS.
    pub tls: bool,
    /// The client's certificate, verified against the cluster CA.
    pub client_cert: Option<Arc<CertificateDer<'static>>>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serves `handler` on `listener` until `shutdown` completes; open
/// connections are then dropped.
pub async fn serve<F, Fut, B>(
    listener: TcpListener,
    transport: Transport,
    handler: F,
    shutdown: impl Future<Output = ()>,
) where
    F: Fn(http::Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = http::Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let acceptor = transport.tls.as_ref().map(|t| t.acceptor());
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        let handler = handler.clone();
        let acceptor = acceptor.clone();
        let plaintext = transport.plaintext;
        let metrics = transport.metrics.clone();
        connections.spawn(async move {
            let conn = Conn {
                peer,
                local,
                tls: false,
                client_cert: None,
            };
            match acceptor {
                Some(acceptor) if starts_tls(&stream).await => {
                    let tls = match tokio::time::timeout(
                        Duration::from_secs(10),
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let client_cert = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| Arc::new(c.clone().into_owned()));
                    let conn = Conn {
                        tls: true,
                        client_cert,
                        ..conn
                    };
                    http(TokioIo::new(tls), conn, handler, metrics).await;
                }
                Some(_) if !plaintext => refuse_plaintext(stream).await,
                _ => http(TokioIo::new(stream), conn, handler, metrics).await,
            }
        });
    }
    connections.abort_all();
}

/// Whether the client's first byte is a TLS handshake record (0x16).
async fn starts_tls(stream: &TcpStream) -> bool {
    let mut first = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(10), stream.peek(&mut first)).await,
        Ok(Ok(1)) if first[0] == 0x16
    )
}

/// Plain HTTP on a TLS-only listener: a readable 400, then close.
async fn refuse_plaintext(mut stream: TcpStream) {
    let body = "This port speaks TLS: use https:// (and the cluster CA).\n";
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(answer.as_bytes()).await;
    let _ = stream.shutdown().await;
}

async fn http<IO, F, Fut, B>(
    io: IO,
    conn: Conn,
    handler: F,
    metrics: Option<crate::metrics::HttpMetrics>,
) where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    F: Fn(http::Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = http::Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let peer = conn.peer;
    let service = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
        req.extensions_mut().insert(conn.clone());
        let started = std::time::Instant::now();
        let method = req.method().clone();
        let response = handler(req);
        let metrics = metrics.clone();
        async move {
            let response = response.await;
            if let Some(m) = &metrics {
                m.observe(&method, response.status().as_u16(), started.elapsed());
            }
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    if let Err(e) = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(io, service)
        .await
    {
        debug!(%peer, error = %e, "connection ended with an error");
    }
}
