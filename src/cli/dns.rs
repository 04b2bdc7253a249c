//! `agora dns`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use agora_dns::{DnsOptions, IpSource};
use anyhow::Context as _;
use clap::Args;

/// Flags of `agora dns` (Mesos-DNS' names and defaults where it has them).
#[derive(Args, Debug, Clone)]
pub struct DnsArgs {
    /// The masters, `host:port[,host:port…]`: the first that answers names
    /// the leader, which is followed until it goes (as Mesos-DNS' `masters`);
    /// or `zk://host:2181[,host:2181]/mesos`: the leader ZooKeeper names.
    #[arg(long, env = "AGORA_MASTER")]
    pub master: String,
    /// Address to serve DNS on (UDP and TCP).
    #[arg(long, default_value = "0.0.0.0")]
    pub ip: IpAddr,
    /// DNS port.
    #[arg(long, default_value_t = 53)]
    pub port: u16,
    /// Port of the HTTP API (`/v1/hosts/…`, `/v1/services/…`; 0: off).
    #[arg(long, default_value_t = 8123)]
    pub http_port: u16,
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
    #[arg(long, default_value = "60s", value_parser = agora_proto::duration::parse)]
    pub refresh: Duration,
    /// Resolvers for names outside the domain, tried in order (`ip` or
    /// `ip:port`, comma separated); without any such names are REFUSED.
    #[arg(long, value_delimiter = ',', value_parser = parse_resolver)]
    pub resolvers: Vec<SocketAddr>,
    /// How long each resolver may take.
    #[arg(long, default_value = "5s", value_parser = agora_proto::duration::parse)]
    pub timeout: Duration,
    /// A file with the principal and secret for the master
    /// (`{"principal": "dns", "secret": "…"}`), as Mesos-DNS' `mesosCredentials`.
    #[arg(long, value_parser = super::credential_file)]
    pub credential: Option<agora_proto::auth::Credential>,
    /// TLS: the cluster CA to reach the master with, and with a
    /// certificate and key, TLS on the HTTP API too.
    #[command(flatten)]
    pub tls: super::TlsArgs,
}

fn parse_resolver(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| format!("'{s}' is not an IP address or ip:port"))
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
        o.resolvers = self.resolvers.clone();
        o.timeout = self.timeout;
        o.credential = self.credential.clone();
        o
    }

    fn client_tls(&self) -> anyhow::Result<Option<agora_rpc::tls::ClientTls>> {
        self.tls.client()
    }
}

pub async fn run(args: DnsArgs) -> anyhow::Result<()> {
    let addr = SocketAddr::new(args.ip, args.port);
    let (udp, tcp) = agora_dns::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (--ip/--port)"))?;
    let http = if args.http_port == 0 {
        None
    } else {
        let addr = SocketAddr::new(args.ip, args.http_port);
        Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (--http-port, 0 to skip)"))?,
        )
    };
    let mut options = args.options();
    options.tls = args.client_tls()?;
    options.http_transport = args.tls.transport()?;
    let dns = agora_dns::start(options, udp, tcp, http).await?;
    eprintln!(
        "agora dns on {} (UDP and TCP), domain {}, master {}{}",
        dns.addr,
        args.domain,
        args.master,
        dns.http_addr
            .map(|a| format!(", HTTP API on http://{a}"))
            .unwrap_or_default()
    );
    super::shutdown_signal().await;
    dns.stop().await;
    Ok(())
}
