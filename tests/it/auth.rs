//! Authentication with the clients that speak it: a master whose realms
//! require Mesos credentials (HTTP Basic) against the SDK, marathon-rs,
//! pymesos 0.3.15 with principal and secret, agora dns and curl-like
//! requests; Mesos' 401 answers with the realm.

use std::sync::Arc;
use std::time::Duration;

use agora_proto::auth::{Credential, Credentials, Realm, Secret};
use agora_proto::v1::TaskState;
use agora_rpc::auth::HttpAuth;
use agora_sdk::{Event, SchedulerConfig, TaskBuilder};
use serde_json::{Value, json};

use crate::cluster::{Cluster, missing, start_agent};
use crate::e2e::{first_offer, next_matching, run_until};

fn credential(principal: &str, secret: &str) -> Credential {
    Credential {
        principal: principal.into(),
        secret: Secret::new(secret),
    }
}

/// A master whose three realms require one of `fw`, `ops`, `dns`, `marathon`
/// (secret: the name and `-secret`), with one agent.
pub(crate) async fn authenticated_cluster() -> Cluster {
    authorized_cluster(agora_proto::acl::Acls::default()).await
}

/// [`authenticated_cluster`] with `acls`.
pub(crate) async fn authorized_cluster(acls: agora_proto::acl::Acls) -> Cluster {
    let credentials = Credentials::of(
        ["fw", "ops", "dns", "marathon"].map(|p| credential(p, &format!("{p}-secret"))),
    );
    let auth = HttpAuth::new(
        [
            Realm::MasterScheduler,
            Realm::MasterReadonly,
            Realm::MasterReadwrite,
        ],
        credentials,
    );
    let options = agora_master::MasterOptions {
        config: agora_master_core::Config {
            allocation_interval: Duration::from_millis(200),
            acls,
            ..Default::default()
        },
        hostname: Some("127.0.0.1".into()),
        seed: 7,
        auth: Arc::new(auth),
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let master = agora_master::start(options, listener).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(
        &master.address(),
        dir.path(),
        1,
        "cpus:2;mem:1024;ports:[36000-36099]",
    )
    .await;
    Cluster {
        master,
        agents: vec![agent],
        dir,
    }
}

async fn get(url: &str, user: Option<(&str, &str)>) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(url);
    if let Some((u, p)) = user {
        req = req.basic_auth(u, Some(p));
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_requires_credentials_in_mesos_realms() {
    let cluster = authenticated_cluster().await;
    // Read-only endpoints: 401 with the realm, without or with wrong
    // credentials; 200 with right ones. /health and /version stay open.
    for path in ["/master/state", "/metrics/snapshot", "/slaves", "/"] {
        for user in [None, Some(("ops", "wrong")), Some(("nobody", "ops-secret"))] {
            let r = get(&cluster.url(path), user).await;
            assert_eq!(r.status(), 401, "{path} as {user:?}");
            assert_eq!(
                r.headers()["www-authenticate"],
                "Basic realm=\"mesos-master-readonly\"",
                "{path}"
            );
            assert_eq!(r.text().await.unwrap(), "401 Unauthorized.");
        }
        assert_eq!(
            get(&cluster.url(path), Some(("ops", "ops-secret")))
                .await
                .status(),
            200,
            "{path}"
        );
    }
    for path in ["/health", "/version"] {
        assert_eq!(get(&cluster.url(path), None).await.status(), 200, "{path}");
    }
    // The operator API is the read-write realm, reads included.
    let operator = |user: Option<(&str, &str)>| {
        let mut req = reqwest::Client::new()
            .post(cluster.url("/api/v1"))
            .header("Content-Type", "application/json")
            .body(r#"{"type":"GET_HEALTH"}"#);
        if let Some((u, p)) = user {
            req = req.basic_auth(u, Some(p));
        }
        req.send()
    };
    let r = operator(None).await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Basic realm=\"mesos-master-readwrite\""
    );
    assert_eq!(
        operator(Some(("ops", "ops-secret")))
            .await
            .unwrap()
            .status(),
        200
    );

    // The scheduler API: a framework with its credential runs a task.
    let mut config = SchedulerConfig::new(&cluster.master(), "authenticated");
    config.credential = Some(credential("fw", "fw-secret"));
    let (scheduler, mut events) = agora_sdk::subscribe(config).await.unwrap();
    let offer = first_offer(&mut events).await;
    run_until(
        &scheduler,
        &mut events,
        &offer,
        ("t1", "true"),
        TaskState::TaskFinished,
    )
    .await;
    // Its principal is the one it authenticated as.
    let state: Value = get(&cluster.url("/master/state"), Some(("ops", "ops-secret")))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(state["frameworks"][0]["principal"], "fw", "{state}");

    // Without credentials, or with wrong ones, SUBSCRIBE is refused.
    for cred in [None, Some(credential("fw", "nope"))] {
        let mut config = SchedulerConfig::new(&cluster.master(), "intruder");
        config.credential = cred.clone();
        let err = agora_sdk::subscribe(config).await.err().unwrap();
        assert!(err.to_string().contains("401"), "{cred:?}: {err}");
    }
    // A framework may not claim another principal than its own.
    let r = reqwest::Client::new()
        .post(cluster.url("/api/v1/scheduler"))
        .basic_auth("fw", Some("fw-secret"))
        .header("Content-Type", "application/json")
        .body(
            json!({"type": "SUBSCRIBE", "subscribe": {"framework_info":
                {"user": "u", "name": "spoof", "principal": "ops"}}})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("Authenticated principal 'fw' does not match principal 'ops'"),
        "{body}"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymesos_with_principal_and_secret_runs_tasks_on_an_authenticated_master() {
    let Some(python) = crate::pymesos::python() else {
        return missing("pymesos in .venv (run tests/python/setup-venv.sh)");
    };
    let cluster = authenticated_cluster().await;
    let summary = crate::pymesos::run_scheduler_as(
        &python,
        &cluster.master(),
        "command",
        2,
        Some(("fw", "fw-secret")),
    )
    .await;
    assert_eq!(summary["completed"], true, "{summary}");
    for i in 0..2 {
        let states = summary["states"][format!("py-{i}")].to_string();
        assert!(states.contains("TASK_FINISHED"), "py-{i}: {states}");
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marathon_rs_and_agora_dns_authenticate_to_the_master() {
    let cluster = authenticated_cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let mut o = agora_marathon::MarathonOptions::new(&cluster.master(), dir.path().into());
    o.tick = Duration::from_millis(200);
    o.credential = Some(credential("marathon", "marathon-secret"));
    let marathon = agora_marathon::start(
        o,
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
    .await
    .unwrap();
    let base = format!("http://{}", marathon.addr);
    let r = reqwest::Client::new()
        .post(format!("{base}/v2/apps"))
        .json(
            &json!({"id": "/secure/web", "cmd": "sleep 600", "cpus": 0.1, "mem": 16,
                      "instances": 1}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    crate::cluster::eventually("the app's task runs", || async {
        let v: Value = reqwest::get(format!("{base}/v2/apps/secure/web/tasks"))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (v["tasks"][0]["state"] == "TASK_RUNNING").then_some(())
    })
    .await;
    // agora dns follows the master with its credential.
    let mut d = agora_dns::DnsOptions::new(cluster.master());
    d.credential = Some(credential("dns", "dns-secret"));
    let (udp, tcp) = agora_dns::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dns = agora_dns::start(d, udp, tcp, None).await.unwrap();
    if crate::cluster::dig_available() {
        crate::cluster::eventually("agora dns names the task", || async {
            let out = crate::cluster::dig(&dns, &["web-secure.marathon.mesos", "A"]);
            (!out.is_empty()).then_some(())
        })
        .await;
    }
    dns.stop().await;
    marathon.stop().await;
    cluster.stop().await;
}

/// Mesos ACLs over HTTP: writes refused with 403 naming the action, reads
/// filtered per principal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acls_refuse_operator_writes_and_filter_state_reads() {
    let acls = agora_proto::acl::Acls::parse(
        br#"{"permissive": false,
            "register_agents": [{"principals":{"type":"ANY"},"agents":{"type":"ANY"}}],
            "register_frameworks": [{"principals":{"type":"ANY"},"roles":{"type":"ANY"}}],
            "run_tasks": [{"principals":{"type":"ANY"},"users":{"type":"ANY"}}],
            "teardown_frameworks": [{"principals":{"values":["ops"]},"framework_principals":{"type":"ANY"}}],
            "view_frameworks": [{"principals":{"values":["ops","fw"]},"users":{"type":"ANY"}}],
            "view_tasks": [{"principals":{"values":["ops","fw"]},"users":{"type":"ANY"}}]}"#,
    )
    .unwrap();
    let cluster = authorized_cluster(acls).await;
    let mut config = SchedulerConfig::new(&cluster.master(), "watched");
    config.credential = Some(credential("fw", "fw-secret"));
    let (scheduler, mut events) = agora_sdk::subscribe(config).await.unwrap();
    let offer = first_offer(&mut events).await;
    run_until(
        &scheduler,
        &mut events,
        &offer,
        ("long", "sleep 60"),
        TaskState::TaskRunning,
    )
    .await;
    let frameworks = |who: (&'static str, &'static str)| {
        let url = cluster.url("/master/state");
        async move {
            let state: Value = get(&url, Some(who)).await.json().await.unwrap();
            (
                state["frameworks"].as_array().unwrap().len(),
                state["frameworks"][0]["tasks"]
                    .as_array()
                    .map_or(0, Vec::len),
            )
        }
    };
    assert_eq!(frameworks(("ops", "ops-secret")).await, (1, 1));
    // `dns` is authenticated but may view nothing: filtered, not refused.
    assert_eq!(frameworks(("dns", "dns-secret")).await, (0, 0));
    let framework = scheduler.framework_id().unwrap().value;
    let teardown = |who: (&'static str, &'static str)| {
        reqwest::Client::new()
            .post(cluster.url("/api/v1"))
            .basic_auth(who.0, Some(who.1))
            .json(&json!({"type": "TEARDOWN", "teardown": {"framework_id": {"value": framework}}}))
            .send()
    };
    let r = teardown(("fw", "fw-secret")).await.unwrap();
    assert_eq!(r.status(), 403);
    let body = r.text().await.unwrap();
    assert!(body.contains("teardown_frameworks"), "{body}");
    assert_eq!(teardown(("ops", "ops-secret")).await.unwrap().status(), 200);
    cluster.stop().await;
}

/// marathon-rs with `--http_credentials` and a token: every path needs them
/// (401 with the realm), and the clients that send them work: the
/// `marathon` client from PyPI (username/password and auth_token), `agora
/// app` and `agora lb` (`--auth-credentials`, marathon-lb's form).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marathon_rs_requires_its_credentials_and_its_clients_send_them() {
    let cluster = Cluster::start(1, "cpus:2;mem:1024").await;
    let dir = tempfile::tempdir().unwrap();
    let mut o = agora_marathon::MarathonOptions::new(&cluster.master(), dir.path().into());
    o.tick = Duration::from_millis(200);
    o.http_auth = Arc::new(agora_marathon::auth::HttpAuth::new(
        Some(("admin".into(), Secret::new("s3cret"))),
        vec![Secret::new("tok-123")],
        "Mesosphere",
    ));
    let marathon = agora_marathon::start(
        o,
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
    .await
    .unwrap();
    let base = format!("http://{}", marathon.addr);
    for path in ["/ping", "/v2/apps", "/v2/info", "/"] {
        let r = get(&format!("{base}{path}"), None).await;
        assert_eq!(r.status(), 401, "{path}");
        assert_eq!(
            r.headers()["www-authenticate"],
            "Basic realm=\"Mesosphere\""
        );
        let wrong = get(&format!("{base}{path}"), Some(("admin", "nope"))).await;
        assert_eq!(wrong.status(), 401, "{path}");
        let right = get(&format!("{base}{path}"), Some(("admin", "s3cret"))).await;
        assert_eq!(right.status(), 200, "{path}");
    }
    let r = reqwest::Client::new()
        .get(format!("{base}/v2/apps"))
        .bearer_auth("tok-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    match crate::cluster::venv_python("marathon") {
        Some(python) => {
            let script = "import sys\nfrom marathon import MarathonClient, MarathonApp\n\
                from marathon.exceptions import MarathonHttpError\n\
                c = MarathonClient(sys.argv[1], username='admin', password='s3cret')\n\
                c.create_app('secure-app', MarathonApp(cmd='sleep 600', cpus=0.1, mem=16, instances=1))\n\
                t = MarathonClient(sys.argv[1], auth_token='tok-123')\n\
                ids = [a.id for a in t.list_apps()]\n\
                try:\n    MarathonClient(sys.argv[1], username='admin', password='wrong').list_apps()\n    refused = False\n\
                except MarathonHttpError as e:\n    refused = e.status_code == 401\n\
                print(ids, refused)";
            let out = tokio::process::Command::new(python)
                .args(["-c", script, &base])
                .output()
                .await
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.trim() == "['/secure-app'] True",
                "{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        None => missing("the marathon client in .venv (run tests/python/setup-venv.sh)"),
    }
    // agora app and agora lb with --auth-credentials; without, a clear error.
    let app = |creds: Option<&str>| {
        let mut cmd = std::process::Command::new(crate::cluster::agora_bin());
        cmd.args(["app", "--marathon", &base]);
        if let Some(c) = creds {
            cmd.args(["--auth-credentials", c]);
        }
        cmd.arg("list").output().unwrap()
    };
    let ok = app(Some("admin:s3cret"));
    assert!(
        ok.status.success() && String::from_utf8_lossy(&ok.stdout).contains("/secure-app"),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let refused = app(None);
    assert!(!refused.status.success());
    let lb = |creds: &[&str]| {
        std::process::Command::new(crate::cluster::agora_bin())
            .args(["lb", "--dry-run", "--marathon", &base])
            .args(creds)
            .output()
            .unwrap()
    };
    assert!(!lb(&[]).status.success());
    let lb = lb(&["--auth-credentials", "admin:s3cret"]);
    assert!(
        lb.status.success() && String::from_utf8_lossy(&lb.stdout).contains("defaults"),
        "{}\n{}",
        String::from_utf8_lossy(&lb.stdout),
        String::from_utf8_lossy(&lb.stderr)
    );
    marathon.stop().await;
    cluster.stop().await;
}

/// A master and one agent whose options `configure` sets (in `dir/agent`,
/// with `resources`).
async fn master_and_agent(
    dir: &std::path::Path,
    resources: &str,
    configure: impl FnOnce(&mut agora_agent::AgentOptions),
) -> (agora_master::RunningMaster, agora_agent::RunningAgent) {
    let master = crate::cluster::start_master(
        agora_master_core::Config {
            allocation_interval: Duration::from_millis(200),
            ..Default::default()
        },
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
    .await;
    let mut o = agora_agent::AgentOptions::new(
        master.address(),
        dir.join("agent"),
        crate::cluster::agora_bin(),
    );
    o.resources = Some(agora_proto::resources::Resources::parse(resources, "*").unwrap());
    configure(&mut o);
    let agent = agora_agent::start(
        o,
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
    .await
    .unwrap();
    agent.registered(Duration::from_secs(10)).await.unwrap();
    (master, agent)
}

/// Executors carry a token signed by their agent (HS256, Mesos' fid/eid/cid
/// claims, in MESOS_EXECUTOR_AUTHENTICATION_TOKEN); with
/// --authenticate-http-executors every executor call needs it. Tasks never
/// see it. A token signed with another key is 401; one naming another
/// executor 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executors_authenticate_with_their_agents_token() {
    let dir = tempfile::tempdir().unwrap();
    let (master, agent) =
        master_and_agent(dir.path(), "cpus:2;mem:1024;ports:[36100-36199]", |o| {
            o.hostname = "agent-jwt".into();
            o.authenticate_http_executors = true;
        })
        .await;
    let (scheduler, mut events) =
        agora_sdk::subscribe(SchedulerConfig::new(&master.address(), "tokens"))
            .await
            .unwrap();
    let offer = first_offer(&mut events).await;
    // The executor authenticated: its task runs.
    run_until(
        &scheduler,
        &mut events,
        &offer,
        ("tokened", "env > env.tmp && mv env.tmp env.txt; sleep 60"),
        TaskState::TaskRunning,
    )
    .await;
    // `env > env.txt` creates the file before it writes it: wait for the
    // whole of it (the task renames it into place when written).
    let env = crate::cluster::eventually("the task wrote its environment", || async {
        std::fs::read_to_string(find(dir.path(), "env.txt")?).ok()
    })
    .await;
    assert!(env.contains("MESOS_TASK_ID=tokened"), "{env}");
    assert!(
        !env.contains("MESOS_EXECUTOR_AUTHENTICATION_TOKEN"),
        "{env}"
    );

    let framework = scheduler.framework_id().unwrap().value;
    let call = |token: Option<String>| {
        let body = json!({
            "type": "UPDATE",
            "framework_id": {"value": framework},
            "executor_id": {"value": "tokened"},
            "update": {"status": {"task_id": {"value": "tokened"}, "state": "TASK_FAILED",
                                  "uuid": "AAAAAAAAAAAAAAAAAAAAAA=="}}
        });
        let mut req = reqwest::Client::new()
            .post(format!("http://{}/api/v1/executor", agent.addr))
            .json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    let r = call(None).await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer realm=\"mesos-agent-executor\""
    );
    let claims = |eid: &str| agora_proto::auth::ExecutorClaims {
        fid: framework.clone(),
        eid: eid.into(),
        cid: "whatever".into(),
    };
    let wrong_key = agora_proto::auth::executor_token(b"not the agent's key", &claims("tokened"));
    let r = call(Some(wrong_key)).await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    // Signed by the agent, but for another executor.
    let key = std::fs::read(dir.path().join("agent/meta/jwt_secret_key")).unwrap();
    let other = agora_proto::auth::executor_token(&key, &claims("someone-else"));
    let r = call(Some(other)).await.unwrap();
    assert_eq!(r.status(), 403, "{}", r.text().await.unwrap());
    // Nothing reached the framework: the task still runs.
    let state: Value = reqwest::get(format!("http://{}/master/state", master.address()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["frameworks"][0]["tasks"][0]["state"], "TASK_RUNNING");
    agent.stop().await;
    master.stop().await;
}

fn find(dir: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.file_name().is_some_and(|n| n == name) {
            return Some(p);
        }
        if e.file_type().is_ok_and(|t| t.is_dir() && !t.is_symlink())
            && let Some(f) = find(&p, name)
        {
            return Some(f);
        }
    }
    None
}

/// Agents authenticate to the master (`--credential`; the master's
/// `--credentials` turn `--authenticate-agents` on) and guard their own
/// `/state` and `/files` (`--http-credentials`): real processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_present_credentials_and_guard_their_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let credentials = write(
        "credentials.json",
        r#"{"credentials":[{"principal":"ops","secret":"ops-secret"},
                           {"principal":"agent","secret":"agent-secret"}]}"#,
    );
    let agent_credential = write(
        "agent.json",
        r#"{"principal":"agent","secret":"agent-secret"}"#,
    );
    let wrong_credential = write("wrong.json", r#"{"principal":"agent","secret":"guess"}"#);
    let port = crate::cluster::free_port();
    let mut master = tokio::process::Command::new(crate::cluster::agora_bin())
        .args([
            "master",
            "--insecure",
            "--ip",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ])
        .args(["--credentials", &credentials])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let master_address = format!("127.0.0.1:{port}");
    // A free port can be taken by another test before the agent binds it:
    // an agent that exits at once is started again on another.
    let agent = |name: &str, credential: Option<&str>| {
        for _ in 0..5 {
            let own = crate::cluster::free_port();
            let mut cmd = tokio::process::Command::new(crate::cluster::agora_bin());
            cmd.args(["agent", "--insecure", "--master", &master_address])
                .args([
                    "--ip",
                    "127.0.0.1",
                    "--port",
                    &own.to_string(),
                    "--hostname",
                    name,
                ])
                .args(["--resources", "cpus:1;mem:256;ports:[36200-36209]"])
                .arg("--work-dir")
                .arg(dir.path().join(name))
                .args(["--http-credentials", &credentials])
                .kill_on_drop(true);
            if let Some(c) = credential {
                cmd.args(["--credential", c]);
            }
            let mut child = cmd.spawn().unwrap();
            std::thread::sleep(Duration::from_millis(300));
            if matches!(child.try_wait(), Ok(None)) {
                return (child, own);
            }
        }
        panic!("{name} could not start on a free port");
    };
    let (_good, good_port) = agent("agent-good", Some(&agent_credential));
    let (_wrong, _) = agent("agent-wrong", Some(&wrong_credential));
    let (_none, _) = agent("agent-none", None);
    let slaves = || async {
        let r = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/master/slaves"))
            .basic_auth("ops", Some("ops-secret"))
            .send()
            .await
            .ok()?;
        let v: Value = r.json().await.ok()?;
        let names: Vec<String> = v["slaves"]
            .as_array()?
            .iter()
            .filter_map(|s| s["hostname"].as_str().map(str::to_string))
            .collect();
        Some(names)
    };
    crate::cluster::eventually("the agent with credentials registers", || async {
        (slaves().await? == ["agent-good"]).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        slaves().await.unwrap(),
        ["agent-good"],
        "only the agent with credentials"
    );
    // The agent's own endpoints.
    let state = format!("http://127.0.0.1:{good_port}/state");
    let r = get(&state, None).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Basic realm=\"mesos-agent-readonly\""
    );
    assert_eq!(get(&state, Some(("ops", "ops-secret"))).await.status(), 200);
    assert_eq!(
        get(&format!("http://127.0.0.1:{good_port}/health"), None)
            .await
            .status(),
        200
    );
    master.kill().await.unwrap();
}

/// Tasks run as the user their framework names (`CommandInfo.user`, else
/// `FrameworkInfo.user`; Mesos' `--switch_user`), with their sandbox theirs;
/// a user the agent does not have fails the task, naming it. Marathon apps
/// take `user`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_run_as_their_users() {
    if !nix::unistd::Uid::effective().is_root() {
        return missing("root (the agent switches users only as root)");
    }
    let cluster = Cluster::start(1, "cpus:2;mem:1024").await;
    let (scheduler, mut events) =
        agora_sdk::subscribe(SchedulerConfig::new(&cluster.master(), "users"))
            .await
            .unwrap();
    let offer = first_offer(&mut events).await;
    let as_user = |id: &str, user: &str, cmd: &str| {
        let mut t = TaskBuilder::new(id, &offer)
            .command(cmd)
            .cpus(0.1)
            .mem(16.0)
            .build();
        if let Some(c) = t.command.as_mut() {
            c.user = Some(user.into());
        }
        t
    };
    let tasks = vec![
        as_user("as-nobody", "nobody", "id -un > who; touch mine"),
        as_user("as-ghost", "no-such-user-here", "true"),
    ];
    scheduler.launch(&offer, tasks, 0.0).await.unwrap();
    let mut ends = std::collections::BTreeMap::new();
    while ends.len() < 2 {
        let s = next_matching(&mut events, |e| match e {
            Event::Update(s) if agora_proto::status::is_terminal(s.state()) => Some(s.clone()),
            _ => None,
        })
        .await;
        ends.insert(s.task_id.value.clone(), s);
    }
    assert_eq!(
        ends["as-nobody"].state(),
        TaskState::TaskFinished,
        "{:?}",
        ends["as-nobody"]
    );
    let ghost = &ends["as-ghost"];
    assert_eq!(ghost.state(), TaskState::TaskFailed);
    assert!(
        ghost.message().contains("No such user 'no-such-user-here'"),
        "{ghost:?}"
    );
    let who = find(cluster.dir.path(), "who").expect("the task wrote who it was");
    assert_eq!(std::fs::read_to_string(&who).unwrap().trim(), "nobody");
    use std::os::unix::fs::MetadataExt as _;
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let mine = who.with_file_name("mine");
    assert_eq!(std::fs::metadata(mine).unwrap().uid(), nobody.uid.as_raw());
    // A Marathon app with `user` (the first framework goes, and its offers
    // with it).
    scheduler.teardown().await.unwrap();
    let m = crate::marathon::Marathon::start(&cluster).await;
    let (status, r) = m
        .call(
            "POST",
            "/v2/apps",
            Some(
                json!({"id": "/as/nobody", "cmd": "id -un > app-who; sleep 600",
                        "user": "nobody", "cpus": 0.1, "mem": 16}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{r}");
    let who = crate::cluster::eventually("the app wrote who it runs as", || async {
        let f = find(cluster.dir.path(), "app-who")?;
        let text = std::fs::read_to_string(f).ok()?;
        (!text.trim().is_empty()).then(|| text.trim().to_string())
    })
    .await;
    assert_eq!(who, "nobody");
    m.stop().await;
    cluster.stop().await;
}

/// The authentication matrix of the master, walked from its own route list
/// (`agora_master::ROUTES`, which its dispatcher serves: a path not listed
/// is 404, so a new endpoint is in this walk or unreachable): every
/// endpoint × {no credentials, wrong credentials, valid but not authorized,
/// authorized} → 401 / 401 / 403 for writes (reads are filtered, as Mesos) /
/// 2xx; endpoints outside every realm answer everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_master_endpoint_answers_the_authentication_matrix() {
    let acls = agora_proto::acl::Acls::parse(
        br#"{"permissive": false,
            "register_agents": [{"principals":{"type":"ANY"},"agents":{"type":"ANY"}}],
            "register_frameworks": [{"principals":{"type":"ANY"},"roles":{"type":"ANY"}}],
            "teardown_frameworks": [{"principals":{"values":["ops"]},"framework_principals":{"type":"ANY"}}],
            "get_endpoints": [{"principals":{"values":["ops"]},"paths":{"type":"ANY"}}],
            "view_frameworks": [{"principals":{"values":["ops"]},"users":{"type":"ANY"}}],
            "update_maintenance_schedules": [{"principals":{"values":["ops"]},"machines":{"type":"ANY"}}],
            "get_maintenance_statuses": [{"principals":{"values":["ops"]},"machines":{"type":"ANY"}}],
            "start_maintenances": [{"principals":{"values":["ops"]},"machines":{"type":"ANY"}}],
            "stop_maintenances": [{"principals":{"values":["ops"]},"machines":{"type":"ANY"}}]}"#,
    )
    .unwrap();
    let cluster = authorized_cluster(acls).await;
    // Frameworks for the writes to tear down.
    let mut victims = Vec::new();
    for i in 0..4 {
        let mut config = SchedulerConfig::new(&cluster.master(), &format!("victim-{i}"));
        config.credential = Some(credential("fw", "fw-secret"));
        let (s, _events) = agora_sdk::subscribe(config).await.unwrap();
        victims.push((s.framework_id().unwrap().value, _events));
    }
    let mut victim = victims.iter().map(|(id, _)| id.clone());
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for route in agora_master::ROUTES {
        // What each endpoint is sent: writes name a framework that exists.
        let request = |who: Option<(&str, &str)>, framework: &str| {
            let url = cluster.url(route.path);
            let req = match route.path {
                "/api/v1/scheduler" => client
                    .post(url)
                    .header("Content-Type", "application/json")
                    .body(r#"{"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"u","name":"m"}}}"#),
                "/api/v1" => client.post(url).json(
                    &json!({"type": "TEARDOWN", "teardown": {"framework_id": {"value": framework}}}),
                ),
                "/teardown" => client
                    .post(url)
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body(format!("frameworkId={framework}")),
                // In route order: a machine scheduled, taken down, brought up.
                "/maintenance/schedule" => client.post(url).json(&json!({"windows": [
                    {"machine_ids": [{"hostname": "m1"}],
                     "unavailability": {"start": {"nanoseconds": 0}}}]})),
                "/machine/down" | "/machine/up" => client.post(url).json(&json!([{"hostname": "m1"}])),
                _ => client.get(url),
            };
            let req = match who {
                Some((u, p)) => req.basic_auth(u, Some(p)),
                None => req,
            };
            async move {
                let r = req.send().await.unwrap();
                r.status().as_u16()
            }
        };
        // A task page for no task is 404 once through authentication.
        let ok = |s: u16| (200..400).contains(&s) || (route.path == "/ui/task" && s == 404);
        let target = if route.action == Some(agora_proto::acl::Action::TeardownFrameworks) {
            victim.next().unwrap()
        } else {
            String::new()
        };
        let none = request(None, &target).await;
        let wrong = request(Some(("ops", "not-the-secret")), &target).await;
        let unauthorized = request(Some(("dns", "dns-secret")), &target).await;
        let authorized = request(Some(("ops", "ops-secret")), &target).await;
        let cells = (none, wrong, unauthorized, authorized);
        match (route.realm, route.action) {
            (None, _) => assert!(
                ok(none) && ok(wrong) && ok(unauthorized) && ok(authorized),
                "{}: {cells:?}",
                route.path
            ),
            (Some(_), Some(_)) => assert!(
                none == 401 && wrong == 401 && unauthorized == 403 && ok(authorized),
                "{}: {cells:?}",
                route.path
            ),
            (Some(_), None) => assert!(
                none == 401 && wrong == 401 && ok(unauthorized) && ok(authorized),
                "{}: {cells:?}",
                route.path
            ),
        }
    }
    // Off the list: 404 once authenticated, 401 before.
    assert_eq!(
        get(&cluster.url("/no/such/endpoint"), None).await.status(),
        401
    );
    assert_eq!(
        get(
            &cluster.url("/no/such/endpoint"),
            Some(("ops", "ops-secret"))
        )
        .await
        .status(),
        404
    );
    drop(victims);
    cluster.stop().await;
}

/// access_sandboxes on an agent: a principal reads the sandboxes of the
/// users it may, and gets Mesos' empty 403 for the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxes_are_read_by_whom_the_acls_allow() {
    let dir = tempfile::tempdir().unwrap();
    let (master, agent) =
        master_and_agent(dir.path(), "cpus:2;mem:1024;ports:[36400-36409]", |o| {
            o.http_auth = Arc::new(HttpAuth::new(
                [Realm::AgentReadonly],
                Credentials::of(["ops", "dev"].map(|p| credential(p, &format!("{p}-secret")))),
            ));
            o.acls = agora_proto::acl::Acls::parse(
                br#"{"permissive": false,
                     "access_sandboxes": [{"principals":{"values":["ops"]},"users":{"type":"ANY"}},
                                          {"principals":{"values":["dev"]},"users":{"values":["dev-user"]}}]}"#,
            )
            .unwrap();
        })
        .await;
    let (scheduler, mut events) =
        agora_sdk::subscribe(SchedulerConfig::new(&master.address(), "sandboxes"))
            .await
            .unwrap();
    let offer = first_offer(&mut events).await;
    run_until(
        &scheduler,
        &mut events,
        &offer,
        ("readable", "echo secret-output"),
        TaskState::TaskFinished,
    )
    .await;
    let stdout = find(&dir.path().join("agent/slaves"), "stdout").unwrap();
    let url = format!(
        "http://{}/files/read?path={}&offset=0",
        agent.addr,
        stdout.display()
    );
    let r = get(&url, Some(("ops", "ops-secret"))).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("secret-output"));
    // dev may read only dev-user's sandboxes; this one is the framework's user's.
    let r = get(&url, Some(("dev", "dev-secret"))).await;
    assert_eq!(r.status(), 403);
    assert_eq!(r.text().await.unwrap(), "");
    assert_eq!(get(&url, None).await.status(), 401);
    agent.stop().await;
    master.stop().await;
}

/// The agent's authentication matrix, walked from its route list
/// (`agora_agent::ROUTES`, which its dispatcher serves): {no credentials,
/// wrong credentials, valid but not authorized, authorized} → 401 / 401 /
/// 403 (where an ACL action applies; else 2xx) / 2xx. The executor API's
/// credentials are executors' tokens: none or forged → 401, another
/// executor's → 403, its own → 202.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_agent_endpoint_answers_the_authentication_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let (master, agent) =
        master_and_agent(dir.path(), "cpus:2;mem:1024;ports:[36500-36509]", |o| {
            o.http_auth = Arc::new(HttpAuth::new(
                [Realm::AgentReadonly],
                Credentials::of(["ops", "dev"].map(|p| credential(p, &format!("{p}-secret")))),
            ));
            o.acls = agora_proto::acl::Acls::parse(
                br#"{"permissive": false,
                     "access_sandboxes": [{"principals":{"values":["ops"]},"users":{"type":"ANY"}}]}"#,
            )
            .unwrap();
            o.authenticate_http_executors = true;
        })
        .await;
    let (scheduler, mut events) =
        agora_sdk::subscribe(SchedulerConfig::new(&master.address(), "matrix"))
            .await
            .unwrap();
    let offer = first_offer(&mut events).await;
    run_until(
        &scheduler,
        &mut events,
        &offer,
        ("m1", "echo hi; sleep 60"),
        TaskState::TaskRunning,
    )
    .await;
    let stdout = crate::cluster::eventually("the task's stdout", || async {
        find(&dir.path().join("agent/slaves"), "stdout")
    })
    .await;
    let run = stdout.parent().unwrap();
    let cid = run.file_name().unwrap().to_string_lossy().to_string();
    let framework = scheduler.framework_id().unwrap().value;
    let key = std::fs::read(dir.path().join("agent/meta/jwt_secret_key")).unwrap();
    let token = |eid: &str| {
        agora_proto::auth::executor_token(
            &key,
            &agora_proto::auth::ExecutorClaims {
                fid: framework.clone(),
                eid: eid.into(),
                cid: cid.clone(),
            },
        )
    };
    let client = reqwest::Client::new();
    for route in agora_agent::ROUTES {
        let url = |q: &str| format!("http://{}{}{q}", agent.addr, route.path);
        let cells = if route.realm == Some(Realm::AgentExecutor) {
            let call = |bearer: Option<String>| {
                let body = json!({"type": "MESSAGE", "framework_id": {"value": framework},
                                  "executor_id": {"value": "m1"}, "message": {"data": "aGk="}});
                let mut req = client.post(url("")).json(&body);
                if let Some(b) = bearer {
                    req = req.bearer_auth(b);
                }
                async move { req.send().await.unwrap().status().as_u16() }
            };
            (
                call(None).await,
                call(Some("not.a.token".into())).await,
                call(Some(token("someone-else"))).await,
                call(Some(token("m1"))).await,
            )
        } else {
            let q = match route.path {
                "/files/browse" | "/ui/sandbox" => format!("?path={}", run.display()),
                p if p.starts_with("/files/") => format!("?path={}&offset=0", stdout.display()),
                _ => String::new(),
            };
            let get = |who: Option<(&str, &str)>| {
                let mut req = client.get(url(&q));
                if let Some((u, p)) = who {
                    req = req.basic_auth(u, Some(p));
                }
                async move { req.send().await.unwrap().status().as_u16() }
            };
            (
                get(None).await,
                get(Some(("ops", "wrong"))).await,
                get(Some(("dev", "dev-secret"))).await,
                get(Some(("ops", "ops-secret"))).await,
            )
        };
        let ok = |s: u16| (200..300).contains(&s);
        let (none, wrong, unauthorized, authorized) = cells;
        let want_unauthorized = |s: u16| match (route.realm, route.action) {
            (None, _) => ok(s),
            (Some(Realm::AgentExecutor), _) | (Some(_), Some(_)) => s == 403,
            (Some(_), None) => ok(s),
        };
        let open = route.realm.is_none();
        assert!(
            (if open {
                ok(none) && ok(wrong)
            } else {
                none == 401 && wrong == 401
            }) && want_unauthorized(unauthorized)
                && ok(authorized),
            "{}: {cells:?}",
            route.path
        );
    }
    agent.stop().await;
    master.stop().await;
}

/// marathon-rs authenticates every request before routing; each of its
/// routes (`agora_marathon::http::ROUTES`) answers 401 without or with wrong
/// credentials, and is served with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_marathon_route_needs_its_credentials() {
    let cluster = Cluster::start(1, "cpus:1;mem:256").await;
    let dir = tempfile::tempdir().unwrap();
    let mut o = agora_marathon::MarathonOptions::new(&cluster.master(), dir.path().into());
    o.http_auth = Arc::new(agora_marathon::auth::HttpAuth::new(
        Some(("admin".into(), Secret::new("s3cret"))),
        Vec::new(),
        "Mesosphere",
    ));
    let marathon = agora_marathon::start(
        o,
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
    .await
    .unwrap();
    let client = reqwest::Client::new();
    for (method, path) in agora_marathon::http::ROUTES {
        let call = |who: Option<(&str, &str)>| {
            let mut req = client
                .request(
                    reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                    format!("http://{}{path}", marathon.addr),
                )
                .header("Accept", "text/event-stream, application/json")
                .header("Content-Type", "application/json");
            if *method != "GET" {
                req = req.body("{}");
            }
            if let Some((u, p)) = who {
                req = req.basic_auth(u, Some(p));
            }
            async move { req.send().await.unwrap().status().as_u16() }
        };
        let cells = (
            call(None).await,
            call(Some(("admin", "wrong"))).await,
            call(Some(("admin", "s3cret"))).await,
        );
        assert!(
            cells.0 == 401 && cells.1 == 401 && cells.2 != 401 && cells.2 != 403 && cells.2 < 500,
            "{method} {path}: {cells:?}"
        );
    }
    marathon.stop().await;
    cluster.stop().await;
}
