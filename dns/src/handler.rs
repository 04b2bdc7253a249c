//! Answers queries from the current record set (hickory-server).
//!
//! In the domain: authoritative answers for A, AAAA, SRV (targets' addresses
//! in the additional section), SOA, NS and ANY; NXDOMAIN with the SOA for an
//! unknown name, NOERROR without answers (and the SOA) for a known name
//! without records of the asked type. Outside the domain: forwarded to the
//! resolvers in order, over the transport the query came by (SERVFAIL when
//! none answers), or REFUSED when there are none. Answers are shuffled per
//! query, as Mesos-DNS does.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr as _;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, NS, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::xfer::Protocol;
use hickory_server::authority::MessageResponseBuilder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use tracing::debug;

use crate::records::Records;

/// The record set being served and when it was built.
#[derive(Debug, Default)]
pub struct Zone {
    /// The records.
    pub records: Records,
    /// SOA serial: unix time of the build.
    pub serial: u32,
}

/// The request handler.
#[derive(Clone)]
pub struct Handler {
    /// Swapped whole on every rebuild.
    pub zone: Arc<RwLock<Arc<Zone>>>,
    /// TTL of every record.
    pub ttl: u32,
    /// Where names outside the domain go, in order (none: REFUSED).
    pub resolvers: Vec<SocketAddr>,
    /// How long each resolver may take.
    pub timeout: Duration,
    /// Queries answered, by response code, and how long each took.
    pub metrics: DnsMetrics,
}

/// agora dns' own metrics.
#[derive(Clone, Debug)]
pub struct DnsMetrics {
    /// `agora_dns_query_duration_seconds{rcode}`.
    pub queries: agora_rpc::metrics::prometheus::HistogramVec,
    /// Its series for each code of [`RCODES`], resolved once (a label
    /// lookup per query would hash and lock on the hot path).
    by_rcode: Vec<agora_rpc::metrics::prometheus::Histogram>,
}

/// The response codes counted apart; the rest are `other`.
const RCODES: [(ResponseCode, &str); 6] = [
    (ResponseCode::NoError, "NOERROR"),
    (ResponseCode::NXDomain, "NXDOMAIN"),
    (ResponseCode::ServFail, "SERVFAIL"),
    (ResponseCode::Refused, "REFUSED"),
    (ResponseCode::FormErr, "FORMERR"),
    (ResponseCode::NotImp, "NOTIMP"),
];

impl Default for DnsMetrics {
    fn default() -> Self {
        let queries = agora_rpc::metrics::histogram(
            "dns",
            "query_duration",
            "Time to answer a DNS query (forwarded ones included), by response code.",
            &["rcode"],
        );
        let by_rcode = RCODES
            .iter()
            .map(|(_, name)| *name)
            .chain(["other"])
            .map(|name| queries.with_label_values(&[name]))
            .collect();
        DnsMetrics { queries, by_rcode }
    }
}

impl DnsMetrics {
    fn observe(&self, code: ResponseCode, seconds: f64) {
        let i = RCODES
            .iter()
            .position(|(c, _)| *c == code)
            .unwrap_or(RCODES.len());
        self.by_rcode[i].observe(seconds);
    }
}

/// Asks `resolver` the question `query` (over TCP when `tcp`).
async fn forward(
    resolver: SocketAddr,
    query: Query,
    recursion: bool,
    tcp: bool,
    timeout: Duration,
) -> Result<Message, String> {
    let mut m = Message::new();
    m.set_id(fastrand::u16(..))
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(recursion)
        .add_query(query);
    let bytes = m.to_vec().map_err(|e| e.to_string())?;
    let exchange = async {
        if tcp {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            let mut s = tokio::net::TcpStream::connect(resolver).await?;
            let len = u16::try_from(bytes.len()).map_err(std::io::Error::other)?;
            s.write_all(&len.to_be_bytes()).await?;
            s.write_all(&bytes).await?;
            let mut len = [0u8; 2];
            s.read_exact(&mut len).await?;
            let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
            s.read_exact(&mut reply).await?;
            Ok::<Vec<u8>, std::io::Error>(reply)
        } else {
            let bind: SocketAddr = if resolver.is_ipv4() {
                "0.0.0.0:0".parse().map_err(std::io::Error::other)?
            } else {
                "[::]:0".parse().map_err(std::io::Error::other)?
            };
            let s = tokio::net::UdpSocket::bind(bind).await?;
            s.connect(resolver).await?;
            s.send(&bytes).await?;
            let mut reply = vec![0u8; 4096];
            loop {
                let n = s.recv(&mut reply).await?;
                // Only the reply to this question counts.
                if n >= 2 && reply[..2] == bytes[..2] {
                    reply.truncate(n);
                    return Ok(reply);
                }
            }
        }
    };
    let reply = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("{resolver}: no answer in {timeout:?}"))?
        .map_err(|e| format!("{resolver}: {e}"))?;
    Message::from_vec(&reply).map_err(|e| format!("{resolver}: {e}"))
}

fn name(s: &str) -> Option<Name> {
    Name::from_str(s).ok()
}

impl Handler {
    fn soa(&self, zone: &Zone) -> Option<Record> {
        let origin = name(&zone.records.zone)?;
        let soa = SOA::new(
            name(&zone.records.ns_name())?,
            name(&format!("root.{}", zone.records.ns_name()))?,
            zone.serial,
            60,
            600,
            86400,
            self.ttl,
        );
        Some(Record::from_rdata(origin, self.ttl, RData::SOA(soa)))
    }

    fn addresses(&self, zone: &Zone, owner: &Name, key: &str, kind: RecordType) -> Vec<Record> {
        zone.records
            .hosts
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|ip| match (ip, kind) {
                (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => Some(RData::A(A(*v4))),
                (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => {
                    Some(RData::AAAA(AAAA(*v6)))
                }
                _ => None,
            })
            .map(|rdata| Record::from_rdata(owner.clone(), self.ttl, rdata))
            .collect()
    }

    /// (answers, additionals, known name?, truncated?) for a query in the
    /// zone, with at most what fits in `payload` bytes: a random subset when
    /// more would not (the caller sets TC over UDP), chosen before any record
    /// is built, so a name with a thousand targets costs what fits.
    fn lookup(
        &self,
        zone: &Zone,
        owner: &Name,
        kind: RecordType,
        payload: usize,
    ) -> (Vec<Record>, Vec<Record>, bool, bool) {
        let key = owner.to_lowercase().to_ascii();
        let key = if key.ends_with('.') {
            key
        } else {
            format!("{key}.")
        };
        // Header, question and EDNS; then about 16 bytes an A record (owner
        // compressed), 28 an AAAA, 60 an SRV with its target's address.
        let budget = payload.saturating_sub(12 + key.len() + 6 + 11);
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        let mut truncated = false;
        if matches!(kind, RecordType::A | RecordType::AAAA | RecordType::ANY) {
            let mut all = self.addresses(zone, owner, &key, kind);
            let fit = (budget / 28).max(1);
            if all.len() > fit {
                fastrand::shuffle(&mut all);
                all.truncate(fit);
                truncated = true;
            }
            answers.extend(all);
        }
        if matches!(kind, RecordType::SRV | RecordType::ANY) {
            let mut targets: Vec<&(String, u16)> = zone
                .records
                .services
                .get(&key)
                .into_iter()
                .flatten()
                .collect();
            let fit = (budget / 60).max(1);
            if targets.len() > fit {
                fastrand::shuffle(&mut targets);
                targets.truncate(fit);
                truncated = true;
            }
            let mut seen = std::collections::HashSet::new();
            for (target, port) in targets {
                let Some(t) = name(target) else { continue };
                answers.push(Record::from_rdata(
                    owner.clone(),
                    self.ttl,
                    RData::SRV(SRV::new(0, 1, *port, t.clone())),
                ));
                if seen.insert(target.as_str()) {
                    additionals.extend(self.addresses(zone, &t, target, RecordType::ANY));
                }
            }
        }
        if key == zone.records.zone {
            if matches!(kind, RecordType::SOA | RecordType::ANY)
                && let Some(soa) = self.soa(zone)
            {
                answers.push(soa);
            }
            if matches!(kind, RecordType::NS | RecordType::ANY)
                && let Some(ns) = name(&zone.records.ns_name())
            {
                answers.push(Record::from_rdata(
                    owner.clone(),
                    self.ttl,
                    RData::NS(NS(ns)),
                ));
            }
        }
        fastrand::shuffle(&mut answers);
        (answers, additionals, zone.records.knows(&key), truncated)
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        let started = std::time::Instant::now();
        let info = self.answer(request, response_handle).await;
        self.metrics
            .observe(info.response_code(), started.elapsed().as_secs_f64());
        info
    }
}

impl Handler {
    async fn answer<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let mut header = Header::response_from_request(request.header());
        let fail = |code: ResponseCode| -> ResponseInfo {
            let mut h = Header::response_from_request(request.header());
            h.set_response_code(code);
            h.into()
        };
        if request.message_type() != MessageType::Query || request.op_code() != OpCode::Query {
            let response = builder.error_msg(request.header(), ResponseCode::NotImp);
            return response_handle
                .send_response(response)
                .await
                .unwrap_or_else(|_| fail(ResponseCode::ServFail));
        }
        let Ok(info) = request.request_info() else {
            let response = builder.error_msg(request.header(), ResponseCode::FormErr);
            return response_handle
                .send_response(response)
                .await
                .unwrap_or_else(|_| fail(ResponseCode::ServFail));
        };
        let zone = self
            .zone
            .read()
            .map(|z| z.clone())
            .unwrap_or_else(|e| e.into_inner().clone());
        let qname: Name = info.query.name().into();
        let kind = info.query.query_type();
        let Some(origin) = name(&zone.records.zone) else {
            return fail(ResponseCode::ServFail);
        };
        if !origin.zone_of(&qname) {
            if self.resolvers.is_empty() {
                debug!(%qname, "outside the domain: refused");
                let response = builder.error_msg(request.header(), ResponseCode::Refused);
                return response_handle
                    .send_response(response)
                    .await
                    .unwrap_or_else(|_| fail(ResponseCode::ServFail));
            }
            let query = Query::query(qname.clone(), kind);
            let tcp = request.protocol() == Protocol::Tcp;
            let recursion = request.header().recursion_desired();
            for resolver in &self.resolvers {
                match forward(*resolver, query.clone(), recursion, tcp, self.timeout).await {
                    Ok(reply) => {
                        header.set_response_code(reply.response_code());
                        header.set_recursion_available(reply.recursion_available());
                        header.set_truncated(reply.truncated());
                        let response = builder.build(
                            header,
                            reply.answers().iter(),
                            reply.name_servers().iter(),
                            std::iter::empty(),
                            reply.additionals().iter(),
                        );
                        return response_handle
                            .send_response(response)
                            .await
                            .unwrap_or_else(|_| fail(ResponseCode::ServFail));
                    }
                    Err(e) => debug!(%qname, error = %e, "resolver failed; trying the next"),
                }
            }
            let response = builder.error_msg(request.header(), ResponseCode::ServFail);
            return response_handle
                .send_response(response)
                .await
                .unwrap_or_else(|_| fail(ResponseCode::ServFail));
        }
        let tcp = request.protocol() == Protocol::Tcp;
        let payload = if tcp {
            u16::MAX as usize
        } else {
            request.max_payload() as usize
        };
        let (answers, additionals, known, truncated) = self.lookup(&zone, &qname, kind, payload);
        // Over UDP the client should ask again over TCP for all of it.
        header.set_truncated(truncated && !tcp);
        header.set_authoritative(true);
        header.set_recursion_available(!self.resolvers.is_empty());
        let soa: Vec<Record> = if answers.is_empty() {
            self.soa(&zone).into_iter().collect()
        } else {
            Vec::new()
        };
        if answers.is_empty() && !known {
            header.set_response_code(ResponseCode::NXDomain);
        }
        let response = builder.build(
            header,
            answers.iter(),
            soa.iter(),
            std::iter::empty(),
            additionals.iter(),
        );
        response_handle
            .send_response(response)
            .await
            .unwrap_or_else(|_| fail(ResponseCode::ServFail))
    }
}
