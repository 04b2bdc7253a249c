//! `agora dns` end to end: a master, agents and marathon-rs; `dig` (Debian's
//! bind9-dnsutils) asks the running server over UDP and TCP.

use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::time::Duration;

use agora_dns::{DnsOptions, RunningDns};
use serde_json::json;

use crate::cluster::eventually;
use crate::cluster::{Cluster, dig, dig_available};
use crate::marathon::Marathon;

/// The whole `dig` answer text.
fn dig_full(dns: &RunningDns, args: &[&str]) -> String {
    let out = std::process::Command::new("dig")
        .arg(format!("@{}", dns.addr.ip()))
        .args(["-p", &dns.addr.port().to_string(), "+time=2", "+tries=1"])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn start_dns(cluster: &Cluster) -> RunningDns {
    let (udp, tcp) = agora_dns::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut o = DnsOptions::new(cluster.master());
    o.refresh = Duration::from_secs(3600); // events only: a poll must not hide a missed event
    agora_dns::start(o, udp, tcp, Some(http)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_are_found_by_name_as_they_come_and_go() {
    if !dig_available() {
        return;
    }
    let cluster = Cluster::start(3, "cpus:4;mem:4096").await;
    let m = Marathon::start(&cluster).await;
    let dns = start_dns(&cluster).await;
    let app = json!({"id": "/shop/web", "cmd": "sleep 600", "cpus": 0.1, "mem": 16, "instances": 3,
                     "portDefinitions": [{"port": 0, "name": "http"}]});
    let (status, r) = m.call("POST", "/v2/apps", Some(app)).await;
    assert_eq!(status, 201, "{r}");
    m.settled("shop/web", 3).await;
    let tasks = m.tasks("shop/web").await;
    let ports: BTreeSet<u64> = tasks
        .iter()
        .map(|t| t["ports"][0].as_u64().unwrap())
        .collect();

    // A: the name Marathon gives (`web.shop`), normalised and as it is.
    let a = eventually("3 tasks answer", || async {
        let a = dig(&dns, &["web-shop.marathon.mesos", "A"]);
        (!a.is_empty()).then_some(a)
    })
    .await;
    assert_eq!(a, ["127.0.0.1"], "agents all on 127.0.0.1");
    assert_eq!(dig(&dns, &["web.shop.marathon.mesos", "A"]), a);
    // SRV: one target per task, on its host port.
    let srv = dig(&dns, &["_web-shop._tcp.marathon.mesos", "SRV"]);
    assert_eq!(srv.len(), 3, "{srv:?}");
    let srv_ports: BTreeSet<u64> = srv
        .iter()
        .map(|l| l.split_whitespace().nth(2).unwrap().parse().unwrap())
        .collect();
    assert_eq!(srv_ports, ports);
    // Each target is a canonical name that resolves.
    let target = srv[0].split_whitespace().nth(3).unwrap().to_string();
    assert!(target.starts_with("web-shop-"), "{target}");
    assert_eq!(dig(&dns, &[&target, "A"]), ["127.0.0.1"]);
    // The same over TCP; the named port too.
    assert_eq!(
        dig(&dns, &["+tcp", "_web-shop._tcp.marathon.mesos", "SRV"]),
        srv
    );
    assert_eq!(
        dig(&dns, &["_http._web-shop._tcp.marathon.mesos", "SRV"]).len(),
        3
    );

    // The HTTP API, in Mesos-DNS' shapes.
    let api = |path: String| {
        let url = format!("http://{}{path}", dns.http_addr.unwrap());
        async move {
            reqwest::get(url)
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let hosts = api("/v1/hosts/web-shop.marathon.mesos".into()).await;
    assert_eq!(
        hosts,
        json!([{"host": "web-shop.marathon.mesos.", "ip": "127.0.0.1"}])
    );
    let services = api("/v1/services/_web-shop._tcp.marathon.mesos.".into()).await;
    let api_ports: BTreeSet<u64> = services
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["port"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(api_ports, ports);
    assert_eq!(
        api("/v1/hosts/nothing.mesos".into()).await,
        json!([{"host": "", "ip": ""}])
    );
    assert_eq!(api("/v1/config".into()).await["Domain"], "mesos");
    // Enumeration: marathon's 3 tasks, each with its name's A record.
    let enumerate = api("/v1/enumerate".into()).await;
    let marathon = enumerate["frameworks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "marathon")
        .unwrap_or_else(|| panic!("{enumerate}"));
    let tasks = marathon["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 3, "{enumerate}");
    for t in tasks {
        assert!(
            t["records"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["name"] == "web-shop.marathon.mesos."
                    && r["rtype"] == "A"
                    && r["host"] == "127.0.0.1"),
            "{t}"
        );
    }
    // The zone transfer view: the same names, SRV targets as target:port.
    let axfr = api("/v1/axfr".into()).await;
    assert_eq!(axfr["Domain"], "mesos");
    assert_eq!(
        axfr["Records"]["As"]["web-shop.marathon.mesos."],
        json!(["127.0.0.1"])
    );
    assert_eq!(
        axfr["Records"]["SRVs"]["_web-shop._tcp.marathon.mesos."]
            .as_array()
            .unwrap()
            .len(),
        ports.len(),
        "{axfr}"
    );
    assert!(api("/v1/version".into()).await["Version"].is_string());
    // Prometheus: the queries asked above, by response code.
    let metrics = reqwest::get(format!("http://{}/metrics", dns.http_addr.unwrap()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    crate::cluster::promtool_accepts("agora dns", &metrics);
    let answered = crate::cluster::sample(
        &metrics,
        r#"agora_dns_query_duration_seconds_count{rcode="NOERROR"}"#,
    );
    assert!(answered.is_some_and(|n| n >= 6.0), "{metrics}");
    assert!(
        crate::cluster::sample(&metrics, "agora_dns_host_names").is_some_and(|n| n >= 1.0),
        "{metrics}"
    );

    // Masters, agents, the framework.
    assert_eq!(dig(&dns, &["leader.mesos", "A"]), ["127.0.0.1"]);
    assert_eq!(dig(&dns, &["master.mesos", "A"]), ["127.0.0.1"]);
    assert_eq!(dig(&dns, &["slave.mesos", "A"]), ["127.0.0.1"]);
    assert_eq!(dig(&dns, &["agent-2.slave.mesos", "A"]), ["127.0.0.1"]);
    let leader = dig(&dns, &["_leader._tcp.mesos", "SRV"]);
    assert_eq!(
        leader,
        [format!("0 1 {} leader.mesos.", cluster.master.addr.port())]
    );
    // An unknown name: NXDOMAIN with the SOA; the zone's SOA and NS.
    let nx = dig_full(&dns, &["nothing.marathon.mesos", "A"]);
    assert!(nx.contains("status: NXDOMAIN"), "{nx}");
    assert!(nx.contains("SOA\tns1.mesos. root.ns1.mesos."), "{nx}");
    assert!(nx.contains("flags: qr aa"), "{nx}");
    assert_eq!(dig(&dns, &["mesos", "NS"]), ["ns1.mesos."]);
    // A known name without records of that type: NOERROR, no answer.
    let nodata = dig_full(&dns, &["web-shop.marathon.mesos", "SRV"]);
    assert!(
        nodata.contains("status: NOERROR") && nodata.contains("ANSWER: 0"),
        "{nodata}"
    );
    // Outside the domain, with no resolvers: REFUSED.
    assert!(dig_full(&dns, &["example.com", "A"]).contains("status: REFUSED"));

    // Scaling follows the master's events.
    let (status, _) = m
        .call("PUT", "/v2/apps/shop/web", Some(json!({"instances": 5})))
        .await;
    assert_eq!(status, 200);
    m.settled("shop/web", 5).await;
    eventually("5 SRV targets", || async {
        (dig(&dns, &["_web-shop._tcp.marathon.mesos", "SRV"]).len() == 5).then_some(())
    })
    .await;
    // Destroyed: gone.
    assert_eq!(m.call("DELETE", "/v2/apps/shop/web", None).await.0, 200);
    eventually("the names are gone", || async {
        dig_full(&dns, &["web-shop.marathon.mesos", "A"])
            .contains("status: NXDOMAIN")
            .then_some(())
    })
    .await;
    dns.stop().await;
    m.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_packets_and_random_bytes_do_not_crash_it() {
    if !dig_available() {
        return;
    }
    let cluster = Cluster::start(1, "cpus:1;mem:512").await;
    let dns = start_dns(&cluster).await;
    eventually("the leader answers", || async {
        (dig(&dns, &["leader.mesos", "A"]) == ["127.0.0.1"]).then_some(())
    })
    .await;
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut rng = fastrand::Rng::with_seed(7);
    for i in 0..5000 {
        let len = rng.usize(0..600);
        let mut packet: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        if i % 3 == 0 && packet.len() > 12 {
            // A plausible header (one question) with garbage after it.
            packet[2..6].copy_from_slice(&[1, 0, 0, 1]);
        }
        let _ = socket.send_to(&packet, dns.addr);
    }
    // Over TCP: a length prefix promising more than is sent, then a close.
    {
        use std::io::Write as _;
        let mut tcp = std::net::TcpStream::connect(dns.addr).unwrap();
        let _ = tcp.write_all(&[0xff, 0xff, 1, 2, 3]);
    }
    // Still answering, over both transports.
    assert_eq!(dig(&dns, &["leader.mesos", "A"]), ["127.0.0.1"]);
    assert_eq!(dig(&dns, &["+tcp", "leader.mesos", "A"]), ["127.0.0.1"]);
    dns.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_outside_the_domain_go_to_the_resolvers_in_order() {
    if !dig_available() {
        return;
    }
    let cluster = Cluster::start(1, "cpus:1;mem:512").await;
    // The upstream: another server, authoritative for `upstream`.
    let (udp, tcp) = agora_dns::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut o = DnsOptions::new(cluster.master());
    o.records.domain = "upstream".into();
    let upstream = agora_dns::start(o, udp, tcp, None).await.unwrap();
    // A resolver that never answers comes first: it is skipped after the timeout.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (udp, tcp) = agora_dns::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut o = DnsOptions::new(cluster.master());
    o.resolvers = vec![silent.local_addr().unwrap(), upstream.addr];
    o.timeout = Duration::from_millis(300);
    let dns = agora_dns::start(o, udp, tcp, None).await.unwrap();
    eventually("the upstream knows its leader", || async {
        (dig(&upstream, &["leader.upstream", "A"]) == ["127.0.0.1"]).then_some(())
    })
    .await;
    assert_eq!(dig(&dns, &["leader.upstream", "A"]), ["127.0.0.1"]);
    assert_eq!(dig(&dns, &["+tcp", "leader.upstream", "A"]), ["127.0.0.1"]);
    let nx = dig_full(&dns, &["nothing.upstream", "A"]);
    assert!(nx.contains("status: NXDOMAIN"), "{nx}");
    // Its own domain is still its own.
    eventually("the leader answers", || async {
        (dig(&dns, &["leader.mesos", "A"]) == ["127.0.0.1"]).then_some(())
    })
    .await;
    // No resolver answers: SERVFAIL.
    let (udp, tcp) = agora_dns::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut o = DnsOptions::new(cluster.master());
    o.resolvers = vec![silent.local_addr().unwrap()];
    o.timeout = Duration::from_millis(300);
    let lonely = agora_dns::start(o, udp, tcp, None).await.unwrap();
    assert!(dig_full(&lonely, &["example.com", "A"]).contains("status: SERVFAIL"));
    for d in [dns, upstream, lonely] {
        d.stop().await;
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_follows_the_next_listed_master_when_the_leader_goes() {
    if !dig_available() {
        return;
    }
    let first = Cluster::start(1, "cpus:1;mem:512").await;
    let second = Cluster::start(1, "cpus:1;mem:512").await;
    let (udp, tcp) = agora_dns::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut o = DnsOptions::new(format!("{},{}", first.master(), second.master()));
    o.refresh = Duration::from_secs(3600);
    let dns = agora_dns::start(o, udp, tcp, Some(http)).await.unwrap();
    let port_of = |c: &Cluster| c.master.addr.port().to_string();
    let leader_port = |dns: &RunningDns| {
        dig(dns, &["_leader._tcp.mesos", "SRV"])
            .first()
            .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
    };
    // The first listed master leads.
    let want = port_of(&first);
    eventually("the first master is followed", || async {
        (leader_port(&dns).as_deref() == Some(want.as_str())).then_some(())
    })
    .await;
    let config: serde_json::Value =
        reqwest::get(format!("http://{}/v1/config", dns.http_addr.unwrap()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(config["Masters"].as_array().unwrap().len(), 2, "{config}");
    // It goes: the next listed master is found and followed.
    first.stop().await;
    let want = port_of(&second);
    eventually("the second master is followed", || async {
        (leader_port(&dns).as_deref() == Some(want.as_str())).then_some(())
    })
    .await;
    dns.stop().await;
    second.stop().await;
}
