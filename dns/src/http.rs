//! The Mesos-DNS HTTP API (port 8123): `/v1/version`, `/v1/config`,
//! `/v1/hosts/{host}`, `/v1/services/{service}`, in Mesos-DNS' shapes.

use std::sync::{Arc, RwLock};

use agora_rpc::http::{Request, body, text};
use http::StatusCode;
use serde_json::{Value, json};

use crate::{DnsOptions, Zone};

/// What the handlers read.
pub struct Context {
    /// The zone being served.
    pub zone: Arc<RwLock<Arc<Zone>>>,
    /// The server's settings (for `/v1/config`).
    pub options: DnsOptions,
    /// The DNS address (for `/v1/config`).
    pub dns_port: u16,
    /// Queries' latency, for `/metrics`.
    pub metrics: crate::handler::DnsMetrics,
    /// HTTP requests' latency, for `/metrics`.
    pub http_metrics: agora_rpc::metrics::HttpMetrics,
}

/// `/metrics`: the zone's size, queries and HTTP requests (Prometheus).
fn metrics(ctx: &Context, zone: &Zone) -> warp::reply::Response {
    let r = &zone.records;
    let all = vec![
        agora_rpc::metrics::gauge(
            "agora_dns_host_names",
            "Names with A or AAAA records.",
            r.hosts.len() as f64,
        ),
        agora_rpc::metrics::gauge(
            "agora_dns_service_names",
            "Names with SRV records.",
            r.services.len() as f64,
        ),
        agora_rpc::metrics::gauge(
            "agora_dns_zone_serial",
            "The SOA serial: when the records were last built (unix time).",
            f64::from(zone.serial),
        ),
        Box::new(ctx.metrics.queries.clone()),
        ctx.http_metrics.collector(),
    ];
    body(
        StatusCode::OK,
        agora_rpc::metrics::CONTENT_TYPE,
        agora_rpc::metrics::render(all),
    )
}

fn json_reply(v: &Value) -> warp::reply::Response {
    body(StatusCode::OK, "application/json", v.to_string())
}

/// A fully qualified, lowercase name.
fn fqdn(name: &str) -> String {
    let n = name.trim().to_ascii_lowercase();
    if n.ends_with('.') { n } else { format!("{n}.") }
}

/// `/v1/config`: the options, as Mesos-DNS names them.
fn config(ctx: &Context, zone: &Zone) -> warp::reply::Response {
    let o = &ctx.options;
    let zk = agora_zk::is_zk(&o.master);
    // Mesos-DNS shows the ZooKeeper URL without credentials.
    let zk_url = o
        .master
        .parse::<agora_zk::ZkUrl>()
        .ok()
        .filter(|_| zk)
        .map(|u| u.to_string())
        .unwrap_or_default();
    let masters: Vec<&str> = if zk {
        Vec::new()
    } else {
        o.master
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .collect()
    };
    json_reply(&json!({
        "RefreshSeconds": o.refresh.as_secs(),
        "TTL": o.ttl,
        "Port": ctx.dns_port,
        "Domain": o.records.domain,
        "Resolvers": o.resolvers.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
        "Timeout": o.timeout.as_secs(),
        "Masters": masters,
        "Zk": zk_url,
        "IPSources": o.records.ip_sources.iter().map(|s| format!("{s:?}").to_lowercase()).collect::<Vec<_>>(),
        "SOAMname": zone.records.ns_name(),
        "SOARname": format!("root.{}", zone.records.ns_name()),
        "DNSOn": true,
        "HTTPOn": true,
        "ExternalOn": !o.resolvers.is_empty(),
        "RecurseOn": !o.resolvers.is_empty(),
    }))
}

/// `/v1/axfr`: every record, as Mesos-DNS' zone transfer in JSON.
fn axfr(ctx: &Context, zone: &Zone) -> warp::reply::Response {
    let r = &zone.records;
    let hosts = |v4: bool| -> serde_json::Map<String, Value> {
        r.hosts
            .iter()
            .filter_map(|(name, ips)| {
                let ips: Vec<Value> = ips
                    .iter()
                    .filter(|ip| ip.is_ipv4() == v4)
                    .map(|ip| Value::String(ip.to_string()))
                    .collect();
                (!ips.is_empty()).then(|| (name.clone(), Value::Array(ips)))
            })
            .collect()
    };
    let services: serde_json::Map<String, Value> = r
        .services
        .iter()
        .map(|(name, targets)| {
            let t = targets
                .iter()
                .map(|(h, p)| Value::String(format!("{h}:{p}")));
            (name.clone(), Value::Array(t.collect()))
        })
        .collect();
    json_reply(&json!({
        "Records": {"As": hosts(true), "AAAAs": hosts(false), "SRVs": services},
        "Serial": zone.serial,
        "Mname": r.ns_name(),
        "Rname": format!("root.{}", r.ns_name()),
        "TTL": ctx.options.ttl,
        "RefreshSeconds": ctx.options.refresh.as_secs(),
        "Domain": ctx.options.records.domain,
    }))
}

/// Answers one request.
pub async fn route(ctx: Arc<Context>, req: Request) -> warp::reply::Response {
    if req.method != http::Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET is supported");
    }
    let zone = ctx
        .zone
        .read()
        .map(|z| z.clone())
        .unwrap_or_else(|e| e.into_inner().clone());
    let path = req.path.trim_end_matches('/');
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        ["metrics"] => metrics(&ctx, &zone),
        ["v1", "version"] => json_reply(&json!({
            "Service": "Agora DNS (Mesos-DNS compatible)",
            "URL": "https://github.com/mesosphere/mesos-dns",
            "Version": agora_proto::AGORA_VERSION,
        })),
        ["v1", "config"] => config(&ctx, &zone),
        ["v1", "hosts", host, "ports"] => {
            let _ = host;
            text(StatusCode::NOT_IMPLEMENTED, "To be implemented...")
        }
        ["v1", "hosts", host] => {
            let host = fqdn(host);
            let list: Vec<Value> = zone
                .records
                .hosts
                .get(&host)
                .into_iter()
                .flatten()
                .map(|ip| json!({"host": host, "ip": ip.to_string()}))
                .collect();
            // Mesos-DNS answers an unknown name with one empty entry.
            if list.is_empty() {
                return json_reply(&json!([{"host": "", "ip": ""}]));
            }
            json_reply(&Value::Array(list))
        }
        ["v1", "services", service] => {
            let service = fqdn(service);
            let mut list = Vec::new();
            for (target, port) in zone.records.services.get(&service).into_iter().flatten() {
                for ip in zone.records.hosts.get(target).into_iter().flatten() {
                    list.push(json!({"service": service, "host": target,
                                     "ip": ip.to_string(), "port": port.to_string()}));
                }
            }
            if list.is_empty() {
                return json_reply(&json!([{"service": "", "host": "", "ip": "", "port": ""}]));
            }
            json_reply(&Value::Array(list))
        }
        ["v1", "enumerate"] => json_reply(&json!({ "frameworks": zone.records.enumeration })),
        ["v1", "axfr"] => axfr(&ctx, &zone),
        _ => text(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
    }
}
