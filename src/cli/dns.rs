//! `agora dns`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use agora_dns::{DnsOptions, IpSource};
use anyhow::Context as _;
use clap::Args;

use super::master::humantime_duration;

/// Flags of `agora dns` (Mesos-DNS' names and defaults where it has them).
#[derive(Args, Debug, Clone)]
pub struct DnsArgs {
    /// The master, `host:port`.
    #[arg(long, env = "AGORA_MASTER")]
    pub master: String,
    /// Address to serve DNS on (UDP and TCP).
    #[arg(long, default_value = "0.0.0.0")]
    pub ip: IpAddr,
    /// DNS port.
    #[arg(long, default_value_t = 53)]
    pub port: u16,
    /// The domain served.
    #[arg(long, default_value = "mesos", value_parser = parse_domain)]
    pub domain: String,
    /// TTL of every record, in seconds.
    #[arg(long, default_value_t = 60)]
    pub ttl: u32,
    /// Where task addresses come from, in order.
    #[arg(long, value_delimiter = ',', default_value = "netinfo,mesos,host")]
    pub ip_sources: Vec<IpSource>,
    /// Full rebuild from the master's state at least this often (events
    /// rebuild it at once).
    #[arg(long, default_value = "60s", value_parser = humantime_duration)]
    pub refresh: Duration,
}

fn parse_domain(s: &str) -> Result<String, String> {
    let d = agora_dns::records::dotted(s);
    if d.is_empty() || d != s.trim_matches('.').to_ascii_lowercase() {
        return Err(format!(
            "'{s}' is not a domain of RFC 1123 labels (e.g. mesos, cluster.example)"
        ));
    }
    Ok(d)
}

impl DnsArgs {
    /// The options these flags describe.
    pub fn options(&self) -> DnsOptions {
        let mut o = DnsOptions::new(self.master.clone());
        o.records.domain = self.domain.clone();
        o.records.ip_sources = self.ip_sources.clone();
        o.ttl = self.ttl;
        o.refresh = self.refresh;
        o
    }
}

pub async fn run(args: DnsArgs) -> anyhow::Result<()> {
    let addr = SocketAddr::new(args.ip, args.port);
    let (udp, tcp) = agora_dns::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (--ip/--port)"))?;
    let dns = agora_dns::start(args.options(), udp, tcp).await?;
    eprintln!(
        "agora dns on {} (UDP and TCP), domain {}, master {}",
        dns.addr, args.domain, args.master
    );
    super::shutdown_signal().await;
    dns.stop().await;
    Ok(())
}
