//! The HTTP APIs' answers to bad input and their wire details, over real
//! HTTP.

use std::time::Duration;

use crate::cluster::Cluster;

async fn post(
    url: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (u16, String) {
    let mut req = reqwest::Client::new().post(url).body(body);
    if let Some(ct) = content_type {
        req = req.header("Content-Type", ct);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_api_refuses_bad_input_with_mesos_codes() {
    let cluster = Cluster::start(0, "cpus:1;mem:64").await;
    let url = cluster.url("/api/v1/scheduler");
    assert_eq!(post(&url, None, "{}").await.0, 400, "missing Content-Type");
    assert_eq!(post(&url, Some("text/plain"), "{}").await.0, 415);
    let (code, body) = post(&url, Some("application/json"), "{not json").await;
    assert_eq!(code, 400);
    assert!(body.contains("Failed to parse"), "{body}");
    let (code, body) = post(
        &url,
        Some("application/json"),
        r#"{"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"u"}}}"#,
    )
    .await;
    assert_eq!(code, 400);
    assert!(body.contains("Missing required fields"), "{body}");
    let (code, _) = post(&url, Some("application/x-protobuf"), vec![0xff, 0xff, 0xff]).await;
    assert_eq!(code, 400, "malformed protobuf");
    let (code, body) = post(
        &url,
        Some("application/json"),
        r#"{"type":"REVIVE","framework_id":{"value":"nope"}}"#,
    )
    .await;
    assert_eq!((code, body.as_str()), (400, "Framework cannot be found"));
    // Too deep.
    let deep = format!("{}{}", "{\"a\":".repeat(200), "}".repeat(200));
    assert_eq!(post(&url, Some("application/json"), deep).await.0, 400);
    // Too big.
    let big = vec![b' '; 17 * 1024 * 1024];
    assert_eq!(post(&url, Some("application/json"), big).await.0, 413);
    // Not a POST.
    let resp = reqwest::get(&url).await.unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(resp.headers()["allow"], "POST");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_stream_is_chunked_recordio_with_a_stream_id() {
    let cluster = Cluster::start(0, "cpus:1;mem:64").await;
    let resp = reqwest::Client::new()
        .post(cluster.url("/master/api/v1/scheduler"))
        .header("Content-Type", "application/json")
        .body(r#"{"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"root","name":"raw","failover_timeout":0}}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert!(resp.headers().get("content-length").is_none());
    let stream_id = resp.headers()["mesos-stream-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(stream_id.len(), 36);
    let mut body = Box::pin(resp.bytes_stream());
    let mut decoder = agora_proto::recordio::Decoder::new(1 << 20);
    let mut records = Vec::new();
    use futures_like::StreamNext;
    while records.len() < 2 {
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.next_chunk())
            .await
            .unwrap()
            .unwrap();
        decoder.push(&chunk);
        while let Some(r) = decoder.next_record().unwrap() {
            records.push(String::from_utf8(r.to_vec()).unwrap());
        }
    }
    assert!(
        records[0].starts_with(r#"{"type":"SUBSCRIBED","subscribed":{"framework_id":"#),
        "{}",
        records[0]
    );
    assert!(!records[0].contains('\n'));
    assert_eq!(records[1], r#"{"type":"HEARTBEAT"}"#);
    // A call with the stream id is accepted; SUBSCRIBE with one is not.
    let fid = serde_json::from_str::<serde_json::Value>(&records[0]).unwrap()["subscribed"]["framework_id"]["value"]
        .as_str()
        .unwrap()
        .to_string();
    let client = reqwest::Client::new();
    let ok = client
        .post(cluster.url("/api/v1/scheduler"))
        .header("Content-Type", "application/json")
        .header("Mesos-Stream-Id", &stream_id)
        .body(format!(
            r#"{{"type":"REVIVE","framework_id":{{"value":"{fid}"}}}}"#
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 202);
    let twice = client
        .post(cluster.url("/api/v1/scheduler"))
        .header("Content-Type", "application/json")
        .header("Mesos-Stream-Id", &stream_id)
        .body(r#"{"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"root","name":"raw"}}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(twice.status().as_u16(), 400);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_and_operator_endpoints_answer() {
    let cluster = Cluster::start(2, "cpus:2;mem:1024").await;
    let version = reqwest::get(cluster.url("/version"))
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(version["version"], "1.11.0");
    assert_eq!(
        reqwest::get(cluster.url("/health"))
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = redirect
        .get(cluster.url("/master/redirect"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 307);
    assert_eq!(
        r.headers()["location"],
        format!("//127.0.0.1:{}", cluster.master.addr.port())
    );
    for path in ["/state", "/master/state.json", "/state.json"] {
        let state = reqwest::get(cluster.url(path))
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap();
        assert_eq!(state["slaves"].as_array().unwrap().len(), 2, "{path}");
        assert_eq!(state["slaves"][0]["resources"]["cpus"], 2.0);
        assert!(
            state["leader"]
                .as_str()
                .unwrap()
                .starts_with("master@127.0.0.1:")
        );
    }
    let metrics = reqwest::get(cluster.url("/metrics/snapshot"))
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(metrics["master/slaves_active"], 2.0);
    assert_eq!(metrics["master/cpus_total"], 4.0);
    // Operator API, through the prefix alias pymesos uses.
    let (code, body) = post(
        &cluster.url("/api/v1/operator"),
        Some("application/json"),
        r#"{"type":"GET_AGENTS"}"#,
    )
    .await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["type"], "GET_AGENTS");
    assert_eq!(v["get_agents"]["agents"].as_array().unwrap().len(), 2);
    let hosts: Vec<&str> = v["get_agents"]["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["agent_info"]["hostname"].as_str().unwrap())
        .collect();
    assert!(
        hosts.contains(&"agent-1") && hosts.contains(&"agent-2"),
        "{hosts:?}"
    );
    // DRAIN_AGENT (Mesos 1.9) on an idle agent: DRAINED at once, inactive;
    // a negative grace is refused.
    let id = v["get_agents"]["agents"][1]["agent_info"]["id"]["value"]
        .as_str()
        .unwrap()
        .to_string();
    let drain = |seconds: i64| {
        format!(
            r#"{{"type":"DRAIN_AGENT","drain_agent":{{"agent_id":{{"value":"{id}"}},"max_grace_period":{{"seconds":{seconds}}}}}}}"#
        )
    };
    let (code, body) = post(&cluster.url("/api/v1"), Some("application/json"), drain(-5)).await;
    assert_eq!(code, 400, "{body}");
    let (code, body) = post(&cluster.url("/api/v1"), Some("application/json"), drain(10)).await;
    assert_eq!(code, 200, "{body}");
    let (_, body) = post(
        &cluster.url("/api/v1"),
        Some("application/json"),
        r#"{"type":"GET_AGENTS"}"#,
    )
    .await;
    let agents: serde_json::Value = serde_json::from_str(&body).unwrap();
    let drained = agents["get_agents"]["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent_info"]["id"]["value"] == id.as_str())
        .unwrap();
    assert_eq!(drained["drain_info"]["state"], "DRAINED", "{drained}");
    assert_eq!(
        drained["drain_info"]["config"]["max_grace_period"]["nanoseconds"],
        10_000_000_000i64
    );
    assert_eq!(drained["active"], false);
    for call in [
        "GET_HEALTH",
        "GET_VERSION",
        "GET_STATE",
        "GET_FRAMEWORKS",
        "GET_TASKS",
        "GET_MASTER",
        "GET_ROLES",
        "GET_FLAGS",
    ] {
        let (code, body) = post(
            &cluster.url("/api/v1"),
            Some("application/json"),
            format!(r#"{{"type":"{call}"}}"#),
        )
        .await;
        assert_eq!(code, 200, "{call}: {body}");
        assert!(
            body.starts_with(&format!(r#"{{"type":"{call}""#)),
            "{call}: {body}"
        );
    }
    // Protobuf responses when asked.
    let resp = reqwest::Client::new()
        .post(cluster.url("/api/v1"))
        .header("Content-Type", "application/json")
        .header("Accept", "application/x-protobuf")
        .body(r#"{"type":"GET_HEALTH"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/x-protobuf");
    let decoded: agora_proto::operator::Response =
        prost::Message::decode(resp.bytes().await.unwrap()).unwrap();
    assert!(decoded.get_health.unwrap().healthy);
    let page = reqwest::get(cluster.url("/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("agent-1") && page.contains("agents active"),
        "the UI lists the agents"
    );
    cluster.stop().await;
}

mod futures_like {
    use bytes::Bytes;

    pub trait StreamNext {
        async fn next_chunk(&mut self) -> Option<Bytes>;
    }

    impl<S> StreamNext for std::pin::Pin<Box<S>>
    where
        S: futures_core_like::Stream<Item = reqwest::Result<Bytes>>,
    {
        async fn next_chunk(&mut self) -> Option<Bytes> {
            std::future::poll_fn(|cx| self.as_mut().poll_next(cx))
                .await
                .and_then(Result::ok)
        }
    }

    pub use futures_core_like::Stream;
    mod futures_core_like {
        pub use futures::Stream;
    }
}

/// The agent's peak resident memory, MB.
fn peak_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024.0
}

/// Issue 12.4: `/files/read` and `/files/download` loaded the whole file (a
/// 1 GiB file read with `length=16` took the agent to 1 GB). Four reads and
/// four downloads of a 1 GiB sandbox file at once must leave the agent's
/// peak memory far below the file's size, with Mesos' answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_serves_a_large_file_without_loading_it() {
    let cluster = Cluster::start(0, "cpus:1").await;
    let dir = tempfile::tempdir().unwrap();
    let port = crate::cluster::free_port();
    let agent = crate::cluster::AgentProcess::start(&cluster.master(), dir.path(), port);
    let work = dir.path().join("agent");
    crate::cluster::eventually("the agent serves", || async {
        reqwest::get(format!("http://127.0.0.1:{port}/health"))
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    let big = work.join("big.log");
    let size: u64 = 1 << 30;
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(size).unwrap();
    drop(f);
    let before = peak_mb(agent.pid());
    let path = big.display().to_string();
    let url = |what: &str, q: &str| format!("http://127.0.0.1:{port}/files/{what}?path={path}{q}");
    let reads = (0..4).map(|i| {
        let u = url("read", &format!("&offset={}&length=16", i * 1000));
        async move {
            reqwest::get(u)
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    });
    let downloads = (0..4).map(|_| {
        let u = url("download", "");
        async move {
            use futures::StreamExt as _;
            let r = reqwest::get(u).await.unwrap();
            assert_eq!(r.status(), 200);
            let mut n = 0u64;
            let mut body = r.bytes_stream();
            while let Some(chunk) = body.next().await {
                n += chunk.unwrap().len() as u64;
            }
            n
        }
    });
    let (reads, downloads) = tokio::join!(
        futures::future::join_all(reads),
        futures::future::join_all(downloads)
    );
    for (i, r) in reads.iter().enumerate() {
        assert_eq!(r["offset"], i * 1000, "{r}");
        assert_eq!(r["data"].as_str().unwrap().len(), 16, "{r}");
    }
    assert!(downloads.iter().all(|&n| n == size), "{downloads:?}");
    // No offset: the size, as a pager asks first.
    let r: serde_json::Value = reqwest::get(url("read", ""))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (r["offset"].as_u64(), r["data"].as_str()),
        (Some(size), Some(""))
    );
    let after = peak_mb(agent.pid());
    eprintln!(
        "agent peak memory: {before:.0} MB before, {after:.0} MB after 4 reads and 4 downloads of a 1 GiB file"
    );
    assert!(after < 256.0, "peak {after:.0} MB (before: {before:.0} MB)");
    // A file outside the work dir is as missing as one that does not exist.
    let outside = reqwest::get(format!(
        "http://127.0.0.1:{port}/files/read?path=/etc/passwd&offset=0"
    ))
    .await
    .unwrap();
    let missing = reqwest::get(url("read", "x&offset=0")).await.unwrap();
    assert_eq!(
        (outside.status().as_u16(), missing.status().as_u16()),
        (404, 404)
    );
    assert_eq!(outside.text().await.unwrap(), missing.text().await.unwrap());
    drop(agent);
    cluster.stop().await;
}

/// Issue 12.5: one SUBSCRIBE with 400,000 labels took the master to 748 MB.
/// A body with too many JSON values is refused before it is built (400),
/// and a FrameworkInfo over the bounds gets Mesos' ERROR event, naming the
/// field; nothing of it stays in `/master/state`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_is_bounded() {
    let cluster = Cluster::start(0, "cpus:1").await;
    let url = cluster.url("/api/v1/scheduler");
    let subscribe = |n: usize| {
        let labels: Vec<String> = (0..n)
            .map(|i| format!(r#"{{"key":"k{i}","value":"v"}}"#))
            .collect();
        format!(
            r#"{{"type":"SUBSCRIBE","subscribe":{{"framework_info":{{"user":"u","name":"big","labels":{{"labels":[{}]}}}}}}}}"#,
            labels.join(",")
        )
    };
    let (code, body) = post(&url, Some("application/json"), subscribe(400_000)).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("more than 250000 values"), "{body}");
    let resp = reqwest::Client::new()
        .post(&url)
        .header("Content-Type", "application/json")
        .body(subscribe(1000))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = tokio::time::timeout(Duration::from_secs(10), resp.text())
        .await
        .unwrap()
        .unwrap();
    assert!(
        text.contains("ERROR") && text.contains("'FrameworkInfo.labels' has 1000 entries"),
        "{text}"
    );
    let state = reqwest::get(cluster.url("/master/state"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        state.len() < 100_000 && !state.contains("k999"),
        "{} bytes",
        state.len()
    );
    cluster.stop().await;
}

/// Issue 12.8: during a master failover the SDK followed redirects between
/// two masters as fast as it could (1,114 in 0.44 s). Redirects in a row
/// back off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_in_a_row_back_off() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use warp::Filter as _;
    let hits = Arc::new(AtomicUsize::new(0));
    let a = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    for (listener, other) in [(a, b_addr), (b, a_addr)] {
        let hits = hits.clone();
        let route = warp::any().map(move || {
            hits.fetch_add(1, Ordering::Relaxed);
            warp::http::Response::builder()
                .status(307)
                .header("Location", format!("//{other}/api/v1/scheduler"))
                .body(String::new())
                .unwrap()
        });
        tokio::spawn(agora_rpc::http::serve(
            listener,
            route,
            std::future::pending(),
        ));
    }
    let subscribing = agora_sdk::subscribe(agora_sdk::SchedulerConfig::new(
        &a_addr.to_string(),
        "ping-pong",
    ));
    assert!(
        tokio::time::timeout(Duration::from_secs(2), subscribing)
            .await
            .is_err()
    );
    let n = hits.load(Ordering::Relaxed);
    eprintln!("{n} redirects followed in 2 s");
    assert!(n < 30, "{n} redirects followed in 2 s");
}
