//! Prometheus metrics of the master, the agents and marathon-rs, scraped
//! from `agora dev` as Prometheus would (TLS with the cluster CA, the
//! admin's credentials), checked by `promtool check metrics`, and telling
//! what the cluster runs.

use serde_json::Value;

use crate::cluster::{Dev, eventually, promtool_accepts, sample};

/// GETs `url` with the dev cluster's CA and admin login; the body.
async fn scrape(dev: &Dev, url: &str, accept: Option<&str>) -> String {
    let secrets = dev.work.join("secrets");
    let cli: Value =
        serde_json::from_str(&std::fs::read_to_string(secrets.join("cli.json")).unwrap()).unwrap();
    let client = agora_rpc::tls::ClientTls::load(&secrets.join("ca.pem"), None)
        .unwrap()
        .reqwest()
        .unwrap()
        .build()
        .unwrap();
    let mut req = client
        .get(url)
        .basic_auth(cli["user"].as_str().unwrap(), cli["password"].as_str());
    if let Some(a) = accept {
        req = req.header("Accept", a);
    }
    let r = req.send().await.unwrap();
    assert!(r.status().is_success(), "{url}: {}", r.status());
    r.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_agents_and_marathon_serve_prometheus_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(&dir.path().join("dev"), 2).await;
    let app = dir.path().join("app.json");
    std::fs::write(
        &app,
        r#"{"id": "/metered", "cmd": "sleep 100000", "cpus": 0.25, "mem": 32, "instances": 3}"#,
    )
    .unwrap();
    let out = dev.agora(&["app", "deploy", app.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");

    // The master: Mesos' keys under Prometheus names, and latencies.
    let master = format!("https://127.0.0.1:{}", dev.port);
    let text = eventually("the master counts 3 running tasks", || async {
        let text = scrape(&dev, &format!("{master}/metrics"), None).await;
        (sample(&text, "agora_master_tasks_running") == Some(3.0)).then_some(text)
    })
    .await;
    promtool_accepts("the master", &text);
    assert_eq!(sample(&text, "agora_master_slaves_active"), Some(2.0));
    assert_eq!(sample(&text, "agora_master_cpus"), Some(4.0), "cpus_total");
    assert!(sample(&text, "agora_master_tasks_launched_total").is_some_and(|n| n >= 3.0));
    assert!(
        sample(&text, "agora_master_allocation_pass_duration_seconds_count")
            .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    // Offers taken, tasks launched to TASK_RUNNING, and updates
    // acknowledged: each measured at least once per task.
    for h in [
        "agora_master_offer_to_accept_seconds_count",
        "agora_master_task_launch_seconds_count",
        "agora_master_status_update_round_trip_seconds_count",
    ] {
        assert!(sample(&text, h).is_some_and(|n| n >= 1.0), "{h}: {text}");
    }
    assert!(
        sample(&text, "agora_master_task_launch_seconds_count").is_some_and(|n| n >= 3.0),
        "{text}"
    );
    // marathon-rs' calls (SUBSCRIBE, ACCEPT, …) are POSTs answered 200/202.
    assert!(
        text.contains(
            r#"agora_master_http_request_duration_seconds_count{code="202",method="POST"}"#
        ),
        "{text}"
    );
    assert!(text.contains("# HELP agora_master_tasks_running Mesos' master/tasks_running."));

    // The agents: Mesos' slave/ keys, their tasks adding up to 3.
    let mut running = 0.0;
    for i in 1..=2u16 {
        let agent = format!("https://127.0.0.{}:{}", i + 1, dev.port + i);
        let text = scrape(&dev, &format!("{agent}/metrics"), None).await;
        promtool_accepts("an agent", &text);
        assert_eq!(sample(&text, "agora_slave_registered"), Some(1.0), "{text}");
        assert_eq!(sample(&text, "agora_slave_cpus"), Some(2.0), "{text}");
        let here = sample(&text, "agora_slave_tasks_running").unwrap();
        let cpus_used = sample(&text, "agora_slave_cpus_used").unwrap();
        assert!((cpus_used - 0.25 * here).abs() < 1e-9, "{text}");
        running += here;
        let snapshot: Value =
            serde_json::from_str(&scrape(&dev, &format!("{agent}/metrics/snapshot"), None).await)
                .unwrap();
        assert_eq!(snapshot["slave/tasks_running"], here, "{snapshot}");
    }
    assert_eq!(running, 3.0);

    // marathon-rs: Prometheus at Marathon 1.9's path and for Prometheus'
    // Accept; Marathon's JSON otherwise.
    let marathon = format!("https://127.0.0.1:{}", dev.marathon_port);
    let text = scrape(&dev, &format!("{marathon}/metrics/prometheus"), None).await;
    promtool_accepts("marathon-rs", &text);
    assert_eq!(sample(&text, "agora_marathon_apps"), Some(1.0), "{text}");
    assert_eq!(
        sample(&text, "agora_marathon_instances_running"),
        Some(3.0),
        "{text}"
    );
    let scraped = scrape(
        &dev,
        &format!("{marathon}/metrics"),
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
    )
    .await;
    assert!(scraped.contains("agora_marathon_apps 1"), "{scraped}");
    let json: Value =
        serde_json::from_str(&scrape(&dev, &format!("{marathon}/metrics"), None).await).unwrap();
    assert_eq!(
        json["gauges"]["service.mesosphere.marathon.app.count"]["value"], 1.0,
        "{json}"
    );
    dev.stop().await;
}
