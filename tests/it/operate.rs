//! Operating the cluster over HTTP: a marathon-rs group that enforces its
//! role, whose app is held to that role's quota limit, and Mesos' legacy
//! maintenance endpoints.

use std::time::Duration;

use serde_json::{Value, json};

use crate::cluster::{Cluster, eventually};
use crate::marathon::Marathon;

async fn post(cluster: &Cluster, path: &str, body: Value) -> (u16, String) {
    cluster.post(path, &body).await
}

async fn get(cluster: &Cluster, path: &str) -> Value {
    reqwest::get(cluster.url(path))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// UPDATE_QUOTA: role `dev` may hold at most `cpus`.
async fn limit_dev_cpus(cluster: &Cluster, cpus: f64) {
    let (status, body) = post(
        cluster,
        "/api/v1",
        json!({"type": "UPDATE_QUOTA", "update_quota": {"quota_configs": [
            {"role": "dev", "limits": {"cpus": {"value": cpus}}}
        ]}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

async fn running(m: &Marathon, app: &str) -> usize {
    m.tasks(app)
        .await
        .iter()
        .filter(|t| t["state"] == "TASK_RUNNING")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_in_a_group_that_enforces_its_role_is_held_to_the_roles_quota() {
    let cluster = Cluster::start(1, "cpus:2;mem:1024;disk:1000").await;
    limit_dev_cpus(&cluster, 0.25).await;
    let m = Marathon::start(&cluster).await;
    // The team's top-level group enforces its role (Marathon 1.9): its apps
    // run in role `dev` without saying so, and may not leave it.
    let (status, body) = m
        .call("POST", "/v2/groups", Some(json!({"id": "/dev"})))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = m
        .call(
            "PATCH",
            "/v2/groups/dev",
            Some(json!({"enforceRole": true})),
        )
        .await;
    assert_eq!((status, body), (200, Value::Null));
    assert_eq!(m.get("/v2/groups/dev").await["enforceRole"], true);
    let (status, body) = m
        .call(
            "POST",
            "/v2/apps",
            Some(json!({"id": "/dev/other", "cmd": "sleep 600", "role": "ops"})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body.to_string().contains("expected one of: [dev]"),
        "{body}"
    );
    let app = m
        .create(
            json!({"id": "/dev/api", "cmd": "sleep 600", "cpus": 0.1, "mem": 16,
                       "instances": 5}),
        )
        .await;
    assert_eq!(app["role"], "dev");

    // marathon-rs took the role (UPDATE_FRAMEWORK); 2 instances fit under
    // the limit of 0.25 cpus and the other 3 wait.
    eventually("two instances in role dev", || async {
        (running(&m, "dev/api").await == 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(running(&m, "dev/api").await, 2, "never beyond the limit");
    let state = get(&cluster, "/state").await;
    let roles = &state["frameworks"][0]["roles"];
    assert!(roles.as_array().unwrap().contains(&json!("dev")), "{roles}");
    let queue = m.get("/v2/queue").await;
    assert_eq!(queue["queue"][0]["count"], 3, "{queue}");

    // Raising the limit lets the rest run.
    limit_dev_cpus(&cluster, 1.0).await;
    eventually("five instances", || async {
        (running(&m, "dev/api").await == 5).then_some(())
    })
    .await;
    m.stop().await;
    cluster.stop().await;
}

/// A static reservation (the agent's `--resources`) is offered to its role,
/// and marathon-rs runs the role's apps on it: 2 × 0.5 cpus where only 0.2
/// cpus are unreserved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_of_a_role_run_on_its_static_reservation() {
    let cluster = Cluster::start(1, "cpus(db):1;mem(db):256;cpus:0.2;mem:256;disk:100").await;
    let m = Marathon::start(&cluster).await;
    m.create(
        json!({"id": "/db/api", "cmd": "sleep 600", "cpus": 0.5, "mem": 32,
                    "instances": 2, "role": "db"}),
    )
    .await;
    eventually("two instances on the reservation", || async {
        (running(&m, "db/api").await == 2).then_some(())
    })
    .await;
    let (status, body) = post(&cluster, "/api/v1", json!({"type": "GET_TASKS"})).await;
    assert_eq!(status, 200, "{body}");
    let tasks: Value = serde_json::from_str(&body).unwrap();
    let launched = tasks["get_tasks"]["tasks"].as_array().unwrap();
    assert_eq!(launched.len(), 2, "{tasks}");
    for task in launched {
        let cpus: Vec<&Value> = task["resources"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["name"] == "cpus")
            .collect();
        assert_eq!(cpus.len(), 1, "{task}");
        assert_eq!(cpus[0]["scalar"]["value"], 0.5);
        assert_eq!(cpus[0]["reservations"][0]["role"], "db", "{task}");
        assert_eq!(cpus[0]["reservations"][0]["type"], "STATIC", "{task}");
    }
    m.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_legacy_maintenance_endpoints_schedule_and_take_machines_down() {
    let cluster = Cluster::start(1, "cpus:1;mem:512").await;
    let machine = json!({"hostname": "agent-1", "ip": "127.0.0.1"});
    let schedule = json!({"windows": [{
        "machine_ids": [machine],
        "unavailability": {"start": {"nanoseconds": 1_000_000_000_000_000_000_i64},
                           "duration": {"nanoseconds": 3_600_000_000_000_i64}}
    }]});
    let (status, body) = post(&cluster, "/maintenance/schedule", schedule.clone()).await;
    assert_eq!(status, 200, "{body}");
    let got = get(&cluster, "/maintenance/schedule").await;
    assert_eq!(got["windows"][0]["machine_ids"][0]["hostname"], "agent-1");
    let status_json = get(&cluster, "/maintenance/status").await;
    assert_eq!(
        status_json["draining_machines"][0]["id"]["hostname"], "agent-1",
        "{status_json}"
    );

    let (status, body) = post(&cluster, "/machine/down", json!([machine])).await;
    assert_eq!(status, 200, "{body}");
    let status_json = get(&cluster, "/maintenance/status").await;
    assert_eq!(status_json["down_machines"][0]["hostname"], "agent-1");
    eventually("the agent removed", || async {
        let state = get(&cluster, "/state").await;
        state["slaves"].as_array()?.is_empty().then_some(())
    })
    .await;
    let (status, body) = post(&cluster, "/machine/up", json!([machine])).await;
    assert_eq!(status, 200, "{body}");
    let status_json = get(&cluster, "/maintenance/status").await;
    assert!(
        status_json["down_machines"]
            .as_array()
            .is_none_or(|d| d.is_empty()),
        "{status_json}"
    );
    // Bad input is a 400 naming what did not parse.
    let (status, body) = post(&cluster, "/machine/down", json!({"not": "a list"})).await;
    assert_eq!(status, 400);
    assert!(body.contains("list of machines"), "{body}");
    cluster.stop().await;
}
