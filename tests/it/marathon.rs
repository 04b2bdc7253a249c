//! marathon-rs end to end: a master and 3 agents running real executor
//! processes, marathon-rs subscribed through the SDK, driven over its REST
//! API the way Marathon clients drive Marathon.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use agora_marathon::{MarathonOptions, RunningMarathon};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::cluster::{Cluster, eventually};

pub struct Marathon {
    pub running: Option<RunningMarathon>,
    pub work_dir: tempfile::TempDir,
    pub master: String,
    client: reqwest::Client,
}

pub async fn start_marathon(master: &str, work_dir: &std::path::Path) -> RunningMarathon {
    let mut o = MarathonOptions::new(master, work_dir.to_path_buf());
    o.tick = Duration::from_millis(200);
    o.event_heartbeat = Duration::from_secs(1);
    o.config.decline_offer_seconds = 5.0;
    agora_marathon::start(o, TcpListener::bind("127.0.0.1:0").await.unwrap())
        .await
        .unwrap()
}

impl Marathon {
    pub async fn start(cluster: &Cluster) -> Marathon {
        let work_dir = tempfile::tempdir().unwrap();
        let running = start_marathon(&cluster.master(), work_dir.path()).await;
        Self::attach(running, work_dir, cluster.master())
    }

    /// A marathon-rs a test started with options of its own.
    pub fn attach(
        running: RunningMarathon,
        work_dir: tempfile::TempDir,
        master: String,
    ) -> Marathon {
        Marathon {
            running: Some(running),
            work_dir,
            master,
            client: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.as_ref().unwrap().addr)
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.client.request(method, self.url(path));
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v)
    }

    pub async fn get(&self, path: &str) -> Value {
        let (status, v) = self.call("GET", path, None).await;
        assert_eq!(status, 200, "GET {path}: {v}");
        v
    }

    /// POST /v2/apps, which must create the app: its AppInfo.
    pub async fn create(&self, app: Value) -> Value {
        let (status, body) = self.call("POST", "/v2/apps", Some(app)).await;
        assert_eq!(status, 201, "{body}");
        body
    }

    pub async fn app(&self, id: &str) -> Value {
        self.get(&format!("/v2/apps/{id}")).await["app"].clone()
    }

    pub async fn tasks(&self, id: &str) -> Vec<Value> {
        self.get(&format!("/v2/apps/{id}/tasks")).await["tasks"]
            .as_array()
            .unwrap()
            .clone()
    }

    pub async fn running_ids(&self, id: &str) -> BTreeSet<String> {
        self.tasks(id)
            .await
            .iter()
            .filter(|t| t["state"] == "TASK_RUNNING")
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect()
    }

    /// Waits until no deployment is in progress and `id` runs `n` tasks.
    /// Waits until the app runs `n` tasks and no deployment is left; on a
    /// timeout the panic shows the app, its tasks, the deployments and the
    /// queue, so a failure says why.
    pub async fn settled(&self, id: &str, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            let deployments = self.get("/v2/deployments").await;
            let tasks = self.tasks(id).await;
            let running = tasks
                .iter()
                .filter(|t| t["state"] == "TASK_RUNNING")
                .count();
            if deployments.as_array().unwrap().is_empty() && running == n && tasks.len() == n {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                let app = self.get(&format!("/v2/apps/{id}")).await;
                let queue = self.get("/v2/queue").await;
                panic!(
                    "{id} did not settle at {n} running\napp: {app}\ntasks: {tasks:?}\n\
                     deployments: {deployments}\nqueue: {queue}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn restart(&mut self) {
        self.running.take().unwrap().stop().await;
        self.running = Some(start_marathon(&self.master, self.work_dir.path()).await);
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }
}

fn hosts(tasks: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for t in tasks {
        *m.entry(t["host"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    m
}

async fn master_tasks(cluster: &Cluster) -> Vec<Value> {
    let state: Value = reqwest::get(cluster.url("/master/tasks"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    state["tasks"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_scale_restart_replace_and_destroy() {
    let cluster = Cluster::start(3, "cpus:4;mem:4096;disk:1000").await;
    let m = Marathon::start(&cluster).await;
    let app = json!({"id": "sleeper", "cmd": "echo $PORT0 $HOST > env.txt; sleep 600",
                     "cpus": 0.1, "mem": 16, "instances": 2});
    let (status, created) = m.call("POST", "/v2/apps", Some(app)).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["id"], "/sleeper");
    // The deployment is visible as soon as the POST returns.
    let deployments = m.get("/v2/deployments").await;
    assert_eq!(deployments[0]["id"], created["deployments"][0]["id"]);
    m.settled("sleeper", 2).await;
    let tasks = m.tasks("sleeper").await;
    assert!(
        tasks
            .iter()
            .all(|t| t["ports"].as_array().unwrap().len() == 1)
    );
    assert_eq!(tasks[0]["servicePorts"], json!([10000]));

    // Scale up the way marathon-python does it: `//` and a Python boolean.
    let (status, r) = m
        .call(
            "PUT",
            "/v2/apps//sleeper?force=False",
            Some(json!({"instances": 5})),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    assert!(r["deploymentId"].is_string());
    m.settled("sleeper", 5).await;
    let app = m.app("sleeper").await;
    assert_eq!(app["tasksRunning"], 5);
    assert_eq!(app["instances"], 5);

    // Scale down: two of the five are killed.
    let before = m.running_ids("sleeper").await;
    m.call("PUT", "/v2/apps/sleeper", Some(json!({"instances": 3})))
        .await;
    m.settled("sleeper", 3).await;
    let after = m.running_ids("sleeper").await;
    assert!(after.is_subset(&before));

    // Restart replaces every task.
    let (status, _) = m.call("POST", "/v2/apps/sleeper/restart", None).await;
    assert_eq!(status, 200);
    m.settled("sleeper", 3).await;
    let restarted = m.running_ids("sleeper").await;
    assert!(restarted.is_disjoint(&after), "{restarted:?} vs {after:?}");

    // A killed task is replaced by a new one.
    let victim = restarted.iter().next().unwrap().clone();
    let (status, killed) = m
        .call("DELETE", &format!("/v2/apps/sleeper/tasks/{victim}"), None)
        .await;
    assert_eq!(status, 200, "{killed}");
    assert_eq!(killed["task"]["id"], victim.as_str());
    eventually("the killed task is replaced", || async {
        let ids = m.running_ids("sleeper").await;
        (ids.len() == 3 && !ids.contains(&victim)).then_some(())
    })
    .await;
    let versions = m.get("/v2/apps/sleeper/versions").await;
    assert!(
        versions["versions"].as_array().unwrap().len() >= 3,
        "{versions}"
    );

    // Destroy: every task ends on the agents.
    let (status, _) = m.call("DELETE", "/v2/apps//sleeper", None).await;
    assert_eq!(status, 200);
    eventually("the app and its tasks are gone", || async {
        let tasks = master_tasks(&cluster).await;
        let live = tasks
            .iter()
            .filter(|t| t["state"] == "TASK_RUNNING" || t["state"] == "TASK_STAGING")
            .count();
        let (status, _) = m.call("GET", "/v2/apps/sleeper", None).await;
        (status == 404 && live == 0).then_some(())
    })
    .await;
    m.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_waits_for_health_and_rolls_back() {
    let cluster = Cluster::start(3, "cpus:4;mem:4096;disk:1000").await;
    let m = Marathon::start(&cluster).await;
    let check = json!([{"protocol": "COMMAND", "command": {"value": "test -f healthy"},
        "delaySeconds": 0, "intervalSeconds": 1, "gracePeriodSeconds": 30,
        "timeoutSeconds": 2, "maxConsecutiveFailures": 0}]);
    let app = json!({"id": "/web/api", "cmd": "touch healthy; sleep 600", "cpus": 0.1, "mem": 16,
        "instances": 3, "healthChecks": check,
        "upgradeStrategy": {"minimumHealthCapacity": 1.0, "maximumOverCapacity": 0.34}});
    assert_eq!(m.call("POST", "/v2/apps", Some(app)).await.0, 201);
    m.settled("web/api", 3).await;
    eventually("all three are healthy", || async {
        (m.app("web/api").await["tasksHealthy"] == 3).then_some(())
    })
    .await;
    let v1 = m.running_ids("web/api").await;

    // A new version that becomes healthy after a second: while it rolls,
    // never fewer than 3 healthy and never more than 4 tasks.
    let (status, r) = m
        .call(
            "PUT",
            "/v2/apps/web/api",
            Some(json!({"cmd": "sleep 1; touch healthy; sleep 600"})),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    let mut samples = 0;
    eventually("the rolling update finishes", || {
        samples += 1;
        async {
            let app = m.app("web/api").await;
            let tasks = app["tasks"].as_array().unwrap();
            let healthy = tasks
                .iter()
                .filter(|t| t["healthCheckResults"][0]["alive"] == true)
                .count();
            assert!(
                healthy >= 3,
                "fewer than 3 healthy during the update: {app}"
            );
            assert!(
                tasks.len() <= 4,
                "more than 4 tasks during the update: {app}"
            );
            let done = app["deployments"].as_array().unwrap().is_empty()
                && tasks.len() == 3
                && healthy == 3;
            done.then_some(())
        }
    })
    .await;
    assert!(samples > 3, "the update was observed while it ran");
    let v2 = m.running_ids("web/api").await;
    assert!(v2.is_disjoint(&v1));

    // A version that never becomes healthy: nothing old is killed, the
    // deployment waits, and deleting it rolls back.
    let (_, r) = m
        .call("PUT", "/v2/apps/web/api", Some(json!({"cmd": "sleep 600"})))
        .await;
    let broken = r["deploymentId"].as_str().unwrap().to_string();
    eventually("the unhealthy new task runs", || async {
        (m.tasks("web/api").await.len() == 4).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        v2.is_subset(&m.running_ids("web/api").await),
        "old tasks were killed"
    );
    let (status, r) = m
        .call("PUT", "/v2/apps/web/api", Some(json!({"instances": 4})))
        .await;
    assert_eq!(status, 409, "{r}");
    assert_eq!(r["deployments"][0]["id"], broken.as_str());
    let (status, r) = m
        .call("DELETE", &format!("/v2/deployments/{broken}"), None)
        .await;
    assert_eq!(status, 200, "{r}");
    m.settled("web/api", 3).await;
    assert_eq!(
        m.app("web/api").await["cmd"],
        "sleep 1; touch healthy; sleep 600"
    );
    m.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constraints_place_tasks_and_unplaceable_apps_wait_in_the_queue() {
    let cluster = Cluster::start(3, "cpus:4;mem:4096;disk:1000").await;
    let m = Marathon::start(&cluster).await;
    let apps = json!([
        {"id": "/c/unique", "cmd": "sleep 600", "cpus": 0.1, "mem": 16, "instances": 3,
         "constraints": [["hostname", "UNIQUE"]]},
        {"id": "/c/groupby", "cmd": "sleep 600", "cpus": 0.1, "mem": 16, "instances": 6,
         "constraints": [["rack", "GROUP_BY", "3"]]},
        {"id": "/c/cluster", "cmd": "sleep 600", "cpus": 0.1, "mem": 16, "instances": 3,
         "constraints": [["rack", "CLUSTER", "r2"]]},
        {"id": "/c/maxper", "cmd": "sleep 600", "cpus": 0.1, "mem": 16, "instances": 6,
         "constraints": [["hostname", "MAX_PER", "2"]]},
        {"id": "/c/like", "cmd": "sleep 600", "cpus": 0.1, "mem": 16, "instances": 2,
         "constraints": [["hostname", "LIKE", "agent-[13]"]]}
    ]);
    let (status, r) = m.call("PUT", "/v2/apps", Some(apps)).await;
    assert_eq!(status, 200, "{r}");
    for (id, n) in [
        ("c/unique", 3),
        ("c/groupby", 6),
        ("c/cluster", 3),
        ("c/maxper", 6),
        ("c/like", 2),
    ] {
        m.settled(id, n).await;
    }
    let unique = hosts(&m.tasks("c/unique").await);
    assert_eq!(unique.len(), 3, "{unique:?}");
    let grouped = hosts(&m.tasks("c/groupby").await);
    assert_eq!(
        grouped.values().copied().collect::<Vec<_>>(),
        [2, 2, 2],
        "{grouped:?}"
    );
    let clustered = hosts(&m.tasks("c/cluster").await);
    assert_eq!(clustered.keys().collect::<Vec<_>>(), ["agent-2"]);
    let maxper = hosts(&m.tasks("c/maxper").await);
    assert!(maxper.values().all(|n| *n == 2), "{maxper:?}");
    let like = hosts(&m.tasks("c/like").await);
    assert!(!like.contains_key("agent-2"), "{like:?}");

    // A fourth UNIQUE instance has nowhere to go: it waits, with the reason.
    m.call("PUT", "/v2/apps/c/unique", Some(json!({"instances": 4})))
        .await;
    // So does an app too big for any agent.
    let (status, _) = m
        .call(
            "POST",
            "/v2/apps",
            Some(json!({"id": "/big", "cmd": "sleep 600", "cpus": 64, "mem": 16})),
        )
        .await;
    assert_eq!(status, 201);
    let queue = eventually("both wait in the queue with reasons", || async {
        let q = m.get("/v2/queue").await;
        let items = q["queue"].as_array().unwrap();
        let has = |id: &str, reason: &str| {
            items.iter().any(|i| {
                i["app"]["id"] == id
                    && i["count"] == 1
                    && i["processedOffersSummary"]["rejectSummaryLastOffers"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|r| r["reason"] == reason && r["declined"].as_u64().unwrap() > 0)
            })
        };
        (has("/c/unique", "UnfulfilledConstraint") && has("/big", "InsufficientCpus")).then_some(q)
    })
    .await;
    assert_eq!(queue["queue"].as_array().unwrap().len(), 2, "{queue}");
    // Never half-placed: the unplaceable instance did not go anywhere.
    assert_eq!(m.tasks("c/unique").await.len(), 3);
    assert!(m.tasks("big").await.is_empty());
    // The status page shows it at a glance.
    let page = reqwest::get(m.url("/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("/big") && page.contains("InsufficientCpus"),
        "{page}"
    );
    m.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_marathon_keeps_its_tasks_and_framework() {
    let cluster = Cluster::start(3, "cpus:4;mem:4096;disk:1000").await;
    let mut m = Marathon::start(&cluster).await;
    let (status, _) = m
        .call(
            "POST",
            "/v2/apps",
            Some(
                json!({"id": "/keep", "cmd": "sleep 600", "cpus": 0.1, "mem": 16, "instances": 3}),
            ),
        )
        .await;
    assert_eq!(status, 201);
    m.settled("keep", 3).await;
    let before = m.running_ids("keep").await;
    let framework = m.get("/v2/info").await["frameworkId"].clone();
    assert!(framework.is_string());

    m.restart().await;
    assert_eq!(m.get("/v2/info").await["frameworkId"], framework);
    // Reconciliation happens; nothing is lost or duplicated.
    tokio::time::sleep(Duration::from_secs(2)).await;
    m.settled("keep", 3).await;
    assert_eq!(m.running_ids("keep").await, before);
    let on_master: Vec<Value> = master_tasks(&cluster)
        .await
        .into_iter()
        .filter(|t| t["state"] == "TASK_RUNNING")
        .collect();
    assert_eq!(on_master.len(), 3, "{on_master:?}");
    let frameworks: Value = reqwest::get(cluster.url("/master/frameworks"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(frameworks["frameworks"].as_array().unwrap().len(), 1);
    assert_eq!(frameworks["frameworks"][0]["id"], framework);
    m.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_marathon_errors_and_change_nothing() {
    let cluster = Cluster::start(1, "cpus:2;mem:1024").await;
    let m = Marathon::start(&cluster).await;
    let (status, r) = m
        .call(
            "POST",
            "/v2/apps",
            Some(json!({"id": "/Bad_Id", "cmd": "x"})),
        )
        .await;
    assert_eq!(status, 422, "{r}");
    assert_eq!(r["details"][0]["path"], "/id");
    let (status, r) = m
        .call(
            "POST",
            "/v2/apps",
            Some(json!({"id": "/x", "cmd": "x", "upgradeStrategy": {"minimumHealthCapacity": 2}})),
        )
        .await;
    assert_eq!(status, 422, "{r}");
    assert!(
        r["details"].to_string().contains("minimumHealthCapacity"),
        "{r}"
    );
    let resp = reqwest::Client::new()
        .post(m.url("/v2/apps"))
        .header("Content-Type", "application/json")
        .body("{\"id\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let big = "x".repeat(5 * 1024 * 1024);
    let resp = reqwest::Client::new()
        .post(m.url("/v2/apps"))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    // Marathon consumes JSON only.
    let resp = reqwest::Client::new()
        .post(m.url("/v2/apps"))
        .header("Content-Type", "text/plain")
        .body(r#"{"id": "/plain", "cmd": "sleep 9"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    let (status, r) = m
        .call(
            "POST",
            "/v2/apps",
            Some(json!({"id": "/huge", "cmd": "x", "cpus": 1e308})),
        )
        .await;
    assert_eq!(
        (status, r["details"][0]["path"].as_str()),
        (422, Some("/cpus")),
        "{r}"
    );
    let (status, r) = m.call("GET", "/v2/apps/nope", None).await;
    assert_eq!(
        (status, r["message"].as_str()),
        (404, Some("App '/nope' does not exist"))
    );
    assert_eq!(m.call("DELETE", "/v2/deployments/nope", None).await.0, 404);
    assert_eq!(m.call("GET", "/v2/nothing-here", None).await.0, 404);
    // The event stream needs the right Accept.
    assert_eq!(m.call("GET", "/v2/events", None).await.0, 405);
    let apps = m.get("/v2/apps").await;
    assert_eq!(apps["apps"], json!([]));
    // Unknown fields are ignored; ids are canonicalised.
    let (status, r) = m
        .call("POST", "/v2/apps", Some(json!({"id": "ok", "cmd": "sleep 600", "mem": 16, "cpus": 0.1, "someFutureField": 1})))
        .await;
    assert_eq!(status, 201, "{r}");
    assert_eq!(
        m.call("POST", "/v2/apps", Some(json!({"id": "/ok", "cmd": "x"})))
            .await
            .0,
        409
    );
    let ping = reqwest::get(m.url("/ping"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(ping, "pong");
    let info = m.get("/v2/info").await;
    for key in ["marathon_config", "zookeeper_config", "http_config"] {
        assert!(info[key].is_object(), "{key} in {info}");
    }
    m.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_tells_a_deployment_as_it_happens() {
    use futures::StreamExt as _;
    let cluster = Cluster::start(2, "cpus:2;mem:1024").await;
    let m = Marathon::start(&cluster).await;
    let resp = reqwest::Client::new()
        .get(m.url("/v2/events?event_type=deployment_info&event_type=deployment_success&event_type=status_update_event&event_type=event_stream_attached&plan-format=light"))
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    let mut events: Vec<Value> = Vec::new();
    let mut created = false;
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(chunk) = body.next().await {
            text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
            while let Some(end) = text.find("\r\n\r\n") {
                let frame: String = text.drain(..end + 4).collect();
                let data = frame
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .expect("a data line");
                let event: Value = serde_json::from_str(data).unwrap();
                let kind = frame.lines().next().unwrap().trim_start_matches("event: ").to_string();
                assert_eq!(event["eventType"], kind.as_str());
                events.push(event);
            }
            if !created && !events.is_empty() {
                created = true;
                let (status, _) = m
                    .call("POST", "/v2/apps", Some(json!({"id": "/ev", "cmd": "sleep 600", "cpus": 0.1, "mem": 16, "instances": 2})))
                    .await;
                assert_eq!(status, 201);
            }
            if events.iter().any(|e| e["eventType"] == "deployment_success") {
                break;
            }
        }
    })
    .await
    .expect("a deployment_success event");
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(kinds[0], "event_stream_attached");
    assert_eq!(kinds[1], "deployment_info");
    assert_eq!(kinds.last(), Some(&"deployment_success"));
    let running = events
        .iter()
        .filter(|e| e["eventType"] == "status_update_event" && e["taskStatus"] == "TASK_RUNNING")
        .count();
    assert_eq!(running, 2, "{kinds:?}");
    // Filtered: nothing else came through; light plans have no groups.
    assert!(kinds.iter().all(|k| {
        [
            "event_stream_attached",
            "deployment_info",
            "deployment_success",
            "status_update_event",
        ]
        .contains(k)
    }));
    assert!(events[1]["plan"].get("original").is_none());
    assert!(
        events
            .iter()
            .all(|e| e["timestamp"].as_str().unwrap().ends_with('Z'))
    );
    m.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_marathon_client_from_pypi_drives_marathon_rs() {
    let Some(python) = crate::cluster::venv_python("marathon") else {
        return crate::cluster::missing(
            "the marathon client in .venv (run tests/python/setup-venv.sh)",
        );
    };
    let cluster = Cluster::start(3, "cpus:4;mem:4096;disk:1000").await;
    let m = Marathon::start(&cluster).await;
    let script = crate::cluster::repo().join("tests/python/marathon_client.py");
    let out = tokio::time::timeout(
        Duration::from_secs(240),
        tokio::process::Command::new(&python)
            .arg(&script)
            .arg(m.url(""))
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the client script finishes")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "marathon client failed\nstdout: {stdout}\nstderr: {stderr}"
    );
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap();
    let steps: Vec<&str> = summary["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(steps.last(), Some(&"delete"), "{summary}");
    assert_eq!(
        summary["framework_id"],
        m.get("/v2/info").await["frameworkId"]
    );
    assert_eq!(summary["queue_count"], 1);
    // The typed event stream parsed a whole deployment's events.
    let events: Vec<&str> = summary["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for kind in [
        "api_post_event",
        "deployment_info",
        "status_update_event",
        "health_status_changed_event",
        "deployment_success",
        "app_terminated_event",
    ] {
        assert!(events.contains(&kind), "{kind} missing from {events:?}");
    }
    m.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_cli_deploys_scales_and_destroys_with_tables() {
    let cluster = Cluster::start(2, "cpus:4;mem:4096").await;
    let m = Marathon::start(&cluster).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.json");
    std::fs::write(
        &file,
        json!({"id": "/cli/web", "cmd": "sleep 600", "cpus": 0.1, "mem": 16, "instances": 2})
            .to_string(),
    )
    .unwrap();
    let agora = |args: &[&str]| {
        let out = std::process::Command::new(crate::cluster::agora_bin())
            .arg("app")
            .arg("--marathon")
            .arg(m.url(""))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, out, err) = tokio::task::block_in_place(|| agora(&["deploy", file.to_str().unwrap()]));
    assert!(ok, "{out}{err}");
    assert!(out.contains("deployed /cli/web (2/2 running)"), "{out}");
    let (ok, out, _) = tokio::task::block_in_place(|| agora(&["list"]));
    assert!(ok);
    let row = out
        .lines()
        .find(|l| l.contains("/cli/web"))
        .expect("a row for the app");
    assert!(row.contains("Running") && row.contains("2/2"), "{out}");
    let (ok, out, err) = tokio::task::block_in_place(|| agora(&["scale", "cli/web", "3"]));
    assert!(ok, "{out}{err}");
    assert!(out.contains("scaled /cli/web (3/3 running)"), "{out}");
    assert_eq!(m.running_ids("cli/web").await.len(), 3);
    let (ok, out, _) = tokio::task::block_in_place(|| agora(&["tasks", "/cli/web"]));
    assert!(ok);
    assert_eq!(
        out.lines().filter(|l| l.contains("RUNNING")).count(),
        3,
        "{out}"
    );
    // Errors name what is wrong.
    let (ok, _, err) = tokio::task::block_in_place(|| agora(&["show", "/missing"]));
    assert!(
        !ok && err.contains("404 App '/missing' does not exist"),
        "{err}"
    );
    let (ok, _, err) = tokio::task::block_in_place(|| agora(&["scale", "Bad_Id", "2"]));
    assert!(!ok && err.contains("not an app id"), "{err}");
    let (ok, out, err) = tokio::task::block_in_place(|| agora(&["destroy", "cli/web"]));
    assert!(ok, "{out}{err}");
    let (status, _) = m.call("GET", "/v2/apps/cli/web", None).await;
    assert_eq!(status, 404);
    m.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetched_files_ports_and_http_health_checks() {
    let cluster = Cluster::start(2, "cpus:4;mem:4096;disk:1000").await;
    let m = Marathon::start(&cluster).await;
    // A script fetched from a local path, a page fetched over HTTP: the
    // task serves its sandbox on $PORT0 and the MESOS_HTTP check asks for
    // the fetched page.
    let files = tempfile::tempdir().unwrap();
    let script = files.path().join("serve.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nexec python3 -m http.server \"$PORT0\" --bind 127.0.0.1\n",
    )
    .unwrap();
    let page_server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let page_port = page_server.local_addr().unwrap().port();
    tokio::spawn(agora_rpc::http::serve(
        page_server,
        warp::Filter::map(warp::path("health.html"), || "fine"),
        std::future::pending(),
    ));
    let app = json!({
        "id": "/served", "cmd": "./serve.sh", "cpus": 0.1, "mem": 32, "instances": 2,
        "portDefinitions": [{"port": 0, "name": "http"}],
        "fetch": [{"uri": format!("file://{}", script.display()), "executable": true},
                  {"uri": format!("http://127.0.0.1:{page_port}/health.html")}],
        "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/health.html", "portIndex": 0,
                          "delaySeconds": 0, "intervalSeconds": 1, "gracePeriodSeconds": 30}]
    });
    let (status, r) = m.call("POST", "/v2/apps", Some(app)).await;
    assert_eq!(status, 201, "{r}");
    m.settled("served", 2).await;
    eventually("both are healthy over HTTP", || async {
        (m.app("served").await["tasksHealthy"] == 2).then_some(())
    })
    .await;
    // The health check really went to each task's host port.
    for t in m.tasks("served").await {
        let port = t["ports"][0].as_u64().unwrap();
        let body = reqwest::get(format!("http://127.0.0.1:{port}/health.html"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "fine");
    }
    m.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_failing_its_health_checks_is_killed_and_replaced() {
    let cluster = Cluster::start(1, "cpus:4;mem:4096").await;
    let m = Marathon::start(&cluster).await;
    // Healthy for about two seconds, then the check fails for good.
    let app = json!({
        "id": "/flaky", "cmd": "touch ok; sleep 2; rm ok; sleep 600", "cpus": 0.1, "mem": 16,
        "backoffSeconds": 0.1,
        "healthChecks": [{"protocol": "COMMAND", "command": {"value": "test -f ok"},
                          "delaySeconds": 0, "intervalSeconds": 0.5, "gracePeriodSeconds": 10,
                          "maxConsecutiveFailures": 2}]
    });
    assert_eq!(m.call("POST", "/v2/apps", Some(app)).await.0, 201);
    let first = eventually("the first task is healthy", || async {
        let a = m.app("flaky").await;
        (a["tasksHealthy"] == 1).then(|| a["tasks"][0]["id"].as_str().unwrap().to_string())
    })
    .await;
    let failure = eventually(
        "it is killed for failing its checks and replaced",
        || async {
            let a = m.app("flaky").await;
            let replaced = a["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["id"] != first.as_str());
            (replaced && a["lastTaskFailure"].is_object()).then(|| a["lastTaskFailure"].clone())
        },
    )
    .await;
    assert_eq!(failure["taskId"], first.as_str());
    assert_eq!(failure["state"], "TASK_KILLED");
    assert!(
        failure["message"].as_str().unwrap().contains("health"),
        "{failure}"
    );
    m.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agora_lb_dry_run_renders_the_running_tasks() {
    let cluster = Cluster::start(2, "cpus:4;mem:4096").await;
    let m = Marathon::start(&cluster).await;
    let app = json!({"id": "/lb/web", "cmd": "sleep 600", "cpus": 0.1, "mem": 16, "instances": 2,
                     "labels": {"HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": "web.example.com"},
                     "portDefinitions": [{"port": 0, "name": "http"}]});
    let (status, r) = m.call("POST", "/v2/apps", Some(app)).await;
    assert_eq!(status, 201, "{r}");
    m.settled("lb/web", 2).await;
    let tasks = m.tasks("lb/web").await;
    let service_port = m.app("lb/web").await["portDefinitions"][0]["port"]
        .as_u64()
        .unwrap();
    let out = tokio::process::Command::new(crate::cluster::agora_bin())
        .args(["lb", "--dry-run", "--marathon", &m.url("")])
        .output()
        .await
        .unwrap();
    let cfg = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        cfg.contains(&format!("backend lb_web_{service_port}")),
        "{cfg}"
    );
    assert!(cfg.contains("acl host_web_example_com_lb_web hdr(host) -i web.example.com"));
    for t in &tasks {
        let port = t["ports"][0].as_u64().unwrap();
        assert!(cfg.contains(&format!("127.0.0.1:{port} id ")), "{cfg}");
    }
    m.stop().await;
    cluster.stop().await;
}

/// Issue 12.2: an app in launch backoff made marathon-rs decline offers of
/// 3 agents in one call, which the master took as invalid and re-offered at
/// once (about 15,000 offers a second). Declined offers must stay declined
/// for their filter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_in_backoff_does_not_spin_offers() {
    let cluster = Cluster::start(3, "cpus:2;mem:1024").await;
    let m = Marathon::start(&cluster).await;
    let (status, r) = m
        .call(
            "POST",
            "/v2/apps",
            Some(json!({"id": "/crashing", "cmd": "exit 1", "cpus": 0.1, "mem": 16})),
        )
        .await;
    assert_eq!(status, 201, "{r}");
    let made = || async {
        let m: Value = reqwest::get(cluster.url("/metrics/snapshot"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        m["master/offers_made"].as_f64().unwrap()
    };
    eventually("the app has failed and is in backoff", || async {
        let q = m.get("/v2/queue").await;
        (q["queue"][0]["delay"]["timeLeftSeconds"]
            .as_f64()
            .unwrap_or(0.0)
            > 0.0)
            .then_some(())
    })
    .await;
    let before = made().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let offers = made().await - before;
    // Each agent is offered at most about once a second (the filter marathon-rs
    // sets while it waits, and relaunches); the defect made tens of thousands.
    assert!(offers < 100.0, "{offers} offers in 5 s");
    drop(m);
    cluster.stop().await;
}

/// Issue 12.7: after an operator's TEARDOWN marathon-rs kept showing its
/// tasks running for minutes and retried "Framework has been removed"
/// every 5 s. It must notice at once, show no task that no longer exists,
/// say so, and register anew only when told to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_down_marathon_says_so_and_registers_anew_only_when_told() {
    let cluster = Cluster::start(1, "cpus:2;mem:1024").await;
    let mut m = Marathon::start(&cluster).await;
    let app = json!({"id": "/torn", "cmd": "sleep 600", "cpus": 0.1, "mem": 16, "instances": 2});
    assert_eq!(m.call("POST", "/v2/apps", Some(app)).await.0, 201);
    m.settled("torn", 2).await;
    let framework = m.get("/v2/info").await["frameworkId"]
        .as_str()
        .unwrap()
        .to_string();
    let r = reqwest::Client::new()
        .post(cluster.url("/api/v1"))
        .json(&json!({"type": "TEARDOWN", "teardown": {"framework_id": {"value": framework}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let torn = std::time::Instant::now();
    // At once, not after a reconciliation: within 5 s (the old code showed
    // them for 70 s and more).
    loop {
        let tasks = m.tasks("torn").await;
        let info = m.get("/v2/info").await;
        if tasks.is_empty() && info["frameworkId"].is_null() {
            break;
        }
        assert!(
            torn.elapsed() < Duration::from_secs(5),
            "still shown after the teardown: {tasks:?} {info}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "a torn-down marathon-rs dropped its tasks {:?} after the TEARDOWN",
        torn.elapsed()
    );
    let metrics = m.get("/metrics").await;
    assert_eq!(
        metrics["gauges"]["agora.marathon.framework.removed"]["value"],
        1.0
    );
    let page = reqwest::get(m.url("/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("The master removed framework"), "{page}");
    // It stays that way (no new framework behind the operator's back).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let frameworks: Value = reqwest::get(cluster.url("/frameworks"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(frameworks["frameworks"], json!([]), "{frameworks}");
    assert!(m.tasks("torn").await.is_empty());

    // Told to, a restarted marathon-rs registers a new framework and
    // relaunches the app.
    m.running.take().unwrap().stop().await;
    let mut o = MarathonOptions::new(&m.master, m.work_dir.path().to_path_buf());
    o.tick = Duration::from_millis(200);
    o.reregister_when_removed = true;
    m.running = Some(
        agora_marathon::start(o, TcpListener::bind("127.0.0.1:0").await.unwrap())
            .await
            .unwrap(),
    );
    m.settled("torn", 2).await;
    let info = m.get("/v2/info").await;
    let new = info["frameworkId"].as_str().unwrap();
    assert_ne!(new, framework);
    m.stop().await;
    cluster.stop().await;
}
