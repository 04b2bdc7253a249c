//! Answers queries from the current record set (hickory-server).
//!
//! In the domain: authoritative answers for A, AAAA, SRV (targets' addresses
//! in the additional section), SOA, NS and ANY; NXDOMAIN with the SOA for an
//! unknown name, NOERROR without answers (and the SOA) for a known name
//! without records of the asked type. Outside the domain: REFUSED (no
//! forwarding yet). Answers are shuffled per query, as Mesos-DNS does.

use std::net::IpAddr;
use std::str::FromStr as _;
use std::sync::{Arc, RwLock};

use hickory_proto::op::{Header, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, NS, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
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

    /// (answers, additionals, known name?) for a query in the zone.
    fn lookup(
        &self,
        zone: &Zone,
        owner: &Name,
        kind: RecordType,
    ) -> (Vec<Record>, Vec<Record>, bool) {
        let key = owner.to_lowercase().to_ascii();
        let key = if key.ends_with('.') {
            key
        } else {
            format!("{key}.")
        };
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        if matches!(kind, RecordType::A | RecordType::AAAA | RecordType::ANY) {
            answers.extend(self.addresses(zone, owner, &key, kind));
        }
        if matches!(kind, RecordType::SRV | RecordType::ANY) {
            for (target, port) in zone.records.services.get(&key).into_iter().flatten() {
                let Some(t) = name(target) else { continue };
                answers.push(Record::from_rdata(
                    owner.clone(),
                    self.ttl,
                    RData::SRV(SRV::new(0, 1, *port, t.clone())),
                ));
                for a in self.addresses(zone, &t, target, RecordType::ANY) {
                    if !additionals.contains(&a) {
                        additionals.push(a);
                    }
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
        (answers, additionals, zone.records.knows(&key))
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler>(
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
            debug!(%qname, "outside the domain: refused");
            let response = builder.error_msg(request.header(), ResponseCode::Refused);
            return response_handle
                .send_response(response)
                .await
                .unwrap_or_else(|_| fail(ResponseCode::ServFail));
        }
        let (answers, additionals, known) = self.lookup(&zone, &qname, kind);
        header.set_authoritative(true);
        header.set_recursion_available(false);
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
