//! The client side of the Mesos v1 HTTP APIs: POST a call, or SUBSCRIBE and
//! read the RecordIO event stream. Used by the framework SDK and by the
//! command executor (`agora executor`).

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use prost::{Message, Name};

use agora_proto::recordio;

use crate::http::Encoding;

/// Largest event accepted on a stream.
pub const MAX_EVENT: usize = 64 * 1024 * 1024;

/// Why a call or a stream failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection failed.
    #[error("cannot reach {url}: {source}")]
    Connect {
        /// Where.
        url: String,
        /// Why.
        source: reqwest::Error,
    },
    /// The server answered with an error status.
    #[error("{status} from {url}: {message}")]
    Status {
        /// Where.
        url: String,
        /// The status.
        status: u16,
        /// The body.
        message: String,
        /// The `Location` of a redirect.
        location: Option<String>,
    },
    /// The stream broke or carried something unreadable.
    #[error("event stream from {url} failed: {message}")]
    Stream {
        /// Where.
        url: String,
        /// Why.
        message: String,
    },
}

/// Without a CA: for `http://`, a builder that loads no trust store; for
/// `https://`, reqwest's default (the system's roots).
fn default_builder(url: &str) -> reqwest::ClientBuilder {
    if url.starts_with("http://") {
        crate::tls::plain_reqwest()
    } else {
        reqwest::Client::builder()
    }
}

/// A client for one API endpoint (`http://host:port/api/v1/scheduler`, …).
#[derive(Clone, Debug)]
pub struct ApiClient {
    http: reqwest::Client,
    url: String,
    encoding: Encoding,
    /// The `Authorization` header sent with every request.
    authorization: Option<std::sync::Arc<str>>,
}

impl ApiClient {
    /// A client for `url` speaking `encoding`.
    pub fn new(url: impl Into<String>, encoding: Encoding) -> Self {
        let url = url.into();
        let builder = default_builder(&url);
        Self::with_builder(url, encoding, builder)
    }

    /// A client for `url` speaking `encoding`, over TLS with `tls` when given
    /// (the URL should then be `https://`).
    pub fn with_tls(
        url: impl Into<String>,
        encoding: Encoding,
        tls: Option<&crate::tls::ClientTls>,
    ) -> Self {
        let url = url.into();
        let builder = match tls.map(crate::tls::ClientTls::reqwest) {
            Some(Ok(b)) => b,
            Some(Err(e)) => {
                tracing::error!(error = %e, "unusable TLS settings; requests will fail");
                reqwest::Client::builder().https_only(true)
            }
            None => default_builder(&url),
        };
        Self::with_builder(url, encoding, builder)
    }

    /// A client for `url` from `builder` (TLS, name resolution…), with the
    /// timeouts and redirect policy of every API client.
    pub fn with_builder(
        url: impl Into<String>,
        encoding: Encoding,
        builder: reqwest::ClientBuilder,
    ) -> Self {
        let http = builder
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_default();
        ApiClient {
            http,
            url: url.into(),
            encoding,
            authorization: None,
        }
    }

    /// The same client, sending `Authorization: <value>` with every request
    /// (e.g. [`agora_proto::auth::Credential::basic_header`]).
    pub fn with_authorization(mut self, value: Option<String>) -> Self {
        self.authorization = value.map(Into::into);
        self
    }

    fn post(&self) -> reqwest::RequestBuilder {
        let req = self
            .http
            .post(&self.url)
            .header("Content-Type", self.encoding.content_type())
            .header("Accept", self.encoding.content_type());
        match &self.authorization {
            Some(a) => req.header("Authorization", &**a),
            None => req,
        }
    }

    /// The endpoint.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The encoding used.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// POSTs a call; returns the response body on 2xx.
    pub async fn call<C: Message + Name>(
        &self,
        call: &C,
        stream_id: Option<&str>,
    ) -> Result<Bytes, ClientError> {
        let mut req = self
            .post()
            .timeout(Duration::from_secs(30))
            .body(self.encoding.encode(call));
        if let Some(id) = stream_id {
            req = req.header("Mesos-Stream-Id", id);
        }
        let resp = req.send().await.map_err(|source| ClientError::Connect {
            url: self.url.clone(),
            source,
        })?;
        let status = resp.status();
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let body = resp.bytes().await.map_err(|source| ClientError::Connect {
            url: self.url.clone(),
            source,
        })?;
        if !status.is_success() {
            return Err(ClientError::Status {
                url: self.url.clone(),
                status: status.as_u16(),
                message: String::from_utf8_lossy(&body).into_owned(),
                location,
            });
        }
        Ok(body)
    }

    /// POSTs a SUBSCRIBE call and returns the stream id (if the server sent
    /// one) and the event stream.
    pub async fn subscribe<C: Message + Name, E: Message + Name + Default>(
        &self,
        call: &C,
    ) -> Result<(Option<String>, EventStream<E>), ClientError> {
        let resp = self
            .post()
            .body(self.encoding.encode(call))
            .send()
            .await
            .map_err(|source| ClientError::Connect {
                url: self.url.clone(),
                source,
            })?;
        let status = resp.status();
        if !status.is_success() {
            let location = resp
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .map(String::from);
            let message = resp.text().await.unwrap_or_default();
            return Err(ClientError::Status {
                url: self.url.clone(),
                status: status.as_u16(),
                message,
                location,
            });
        }
        let stream_id = resp
            .headers()
            .get("mesos-stream-id")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let body = Box::pin(resp.bytes_stream());
        Ok((
            stream_id,
            EventStream {
                url: self.url.clone(),
                body,
                decoder: recordio::Decoder::new(MAX_EVENT),
                encoding: self.encoding,
                _event: std::marker::PhantomData,
            },
        ))
    }
}

type Body = std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// The events of a subscription, decoded from RecordIO.
pub struct EventStream<E> {
    url: String,
    body: Body,
    decoder: recordio::Decoder,
    encoding: Encoding,
    _event: std::marker::PhantomData<fn() -> E>,
}

impl<E: Message + Name + Default> EventStream<E> {
    /// The next event; `None` when the server ended the stream.
    pub async fn next(&mut self) -> Option<Result<E, ClientError>> {
        loop {
            match self.decoder.next_record() {
                Ok(Some(record)) => {
                    // Events come from the server we asked; protobuf is decoded
                    // directly (the reflection-based checks of `decode` cost a
                    // descriptor pool, several ms in a short-lived executor).
                    let event = match self.encoding {
                        Encoding::Protobuf => E::decode(record).map_err(|e| e.to_string()),
                        Encoding::Json => self.encoding.decode(&record).map_err(|e| e.to_string()),
                    };
                    return Some(event.map_err(|message| ClientError::Stream {
                        url: self.url.clone(),
                        message,
                    }));
                }
                Ok(None) => {}
                Err(e) => {
                    return Some(Err(ClientError::Stream {
                        url: self.url.clone(),
                        message: e.to_string(),
                    }));
                }
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.decoder.push(&chunk),
                Some(Err(e)) => {
                    return Some(Err(ClientError::Stream {
                        url: self.url.clone(),
                        message: e.to_string(),
                    }));
                }
                None => return None,
            }
        }
    }
}
