//! TLS with certificates from `agora ca`: masters, agents and clients on
//! real processes; mutual TLS on the agents' gRPC sessions (an agent with a
//! certificate from another CA, or none, is refused); clients (the SDK,
//! curl) verify the master against the cluster CA; plain text is refused
//! unless a flag allows it; only TLS 1.2 and newer.

use std::path::{Path, PathBuf};
use std::time::Duration;

use agora_proto::v1::TaskState;
use agora_sdk::{Event, SchedulerConfig, TaskBuilder};
use serde_json::Value;

use crate::cluster::eventually;
use crate::cluster::{agora_bin, free_port};
use crate::e2e::next_matching;

/// `agora ca` in `dir` (cluster `agora`).
pub(crate) fn ca(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new(agora_bin())
        .args(["ca", "--dir"])
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "agora ca {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `--ssl-*` flags for the certificate `name` of the CA in `dir`.
pub(crate) fn ssl_flags(dir: &Path, name: &str) -> Vec<String> {
    let p = |f: String| dir.join(f).display().to_string();
    vec![
        "--ssl-cert-file".into(),
        p(format!("{name}.pem")),
        "--ssl-key-file".into(),
        p(format!("{name}-key.pem")),
        "--ssl-ca-file".into(),
        p("ca.pem".into()),
    ]
}

fn curl(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("curl")
        .args(["-s", "-S", "-m", "5"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn spawn(args: &[String], log: PathBuf) -> tokio::process::Child {
    let f = std::fs::File::create(log).unwrap();
    tokio::process::Command::new(agora_bin())
        .args(args)
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_between_agents_and_the_master_and_verified_clients() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let evil = dir.path().join("evil");
    ca(&pki, &["init"]);
    ca(
        &pki,
        &["issue", "--role", "master", "master-1", "127.0.0.1"],
    );
    ca(&pki, &["issue", "--role", "agent", "agent-1", "127.0.0.1"]);
    ca(&pki, &["issue", "--role", "client", "agent-posing"]);
    ca(&evil, &["init"]);
    ca(
        &evil,
        &["issue", "--role", "agent", "agent-evil", "127.0.0.1"],
    );
    let port = free_port();
    let master = format!("127.0.0.1:{port}");
    let mut args: Vec<String> = [
        "master",
        "--insecure",
        "--ip",
        "127.0.0.1",
        "--port",
        &port.to_string(),
    ]
    .map(String::from)
    .to_vec();
    args.extend(["--allocation-interval".into(), "200ms".into()]);
    args.extend(ssl_flags(&pki, "master-1"));
    let _master = spawn(&args, dir.path().join("master.log"));
    let agent = |name: &str, pki: &Path, cert: Option<&str>| {
        let own = free_port();
        let mut args: Vec<String> = vec![
            "agent".into(),
            "--insecure".into(),
            "--master".into(),
            master.clone(),
            "--ip".into(),
            "127.0.0.1".into(),
            "--port".into(),
            own.to_string(),
            "--hostname".into(),
            name.into(),
            "--resources".into(),
            "cpus:1;mem:256;ports:[36300-36309]".into(),
            "--work-dir".into(),
            dir.path().join(name).display().to_string(),
        ];
        if let Some(cert) = cert {
            args.extend(ssl_flags(pki, cert));
        }
        (spawn(&args, dir.path().join(format!("{name}.log"))), own)
    };
    let (_good, good_port) = agent("good", &pki, Some("agent-1"));
    // A certificate from another CA; one from this CA that is not an
    // agent's; none at all.
    let (_evil, _) = agent("evil", &evil, Some("agent-evil"));
    let (_posing, _) = agent("posing", &pki, Some("agent-posing"));
    let (_plain, _) = agent("plain", &pki, None);
    let ca_file = pki.join("ca.pem").display().to_string();
    let url = |path: &str| format!("https://{master}{path}");
    let slaves = || {
        let (ok, out) = curl(&["--cacert", &ca_file, &url("/master/slaves")]);
        ok.then(|| serde_json::from_str::<Value>(&out).ok())
            .flatten()
            .map(|v| {
                v["slaves"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s["hostname"].as_str().map(String::from))
                    .collect::<Vec<_>>()
            })
    };
    eventually(
        "the agent with a certificate from the cluster CA registers",
        || async { (slaves()? == ["good"]).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(slaves().unwrap(), ["good"], "only the certified agent");
    let log = std::fs::read_to_string(dir.path().join("posing.log")).unwrap();
    assert!(
        log.contains("agents need a certificate for agent.agora"),
        "{log}"
    );

    // Plain HTTP is refused, with a message; curl without the CA refuses
    // the master; TLS 1.1 is not spoken.
    let (_, out) = curl(&[&format!("http://{master}/master/slaves")]);
    assert!(out.contains("This port speaks TLS"), "{out}");
    let (ok, _) = curl(&[&url("/master/slaves")]);
    assert!(
        !ok,
        "a client without the cluster CA must not trust the master"
    );
    let (ok, _) = curl(&["--cacert", &ca_file, "--tls-max", "1.1", &url("/health")]);
    assert!(!ok, "TLS 1.1 must be refused");
    let (ok, _) = curl(&[
        "--cacert",
        &ca_file,
        "--tlsv1.2",
        "--tls-max",
        "1.2",
        &url("/health"),
    ]);
    assert!(ok, "TLS 1.2 is spoken");
    // The agent's own endpoints: TLS only (plain text only for executors).
    let (_, out) = curl(&[&format!("http://127.0.0.1:{good_port}/state")]);
    assert!(out.contains("speaks TLS"), "{out}");
    let (ok, out) = curl(&[
        "--cacert",
        &ca_file,
        &format!("https://127.0.0.1:{good_port}/state"),
    ]);
    assert!(ok && out.contains("\"hostname\":\"good\""), "{out}");

    // A framework over TLS runs a task; its executor reaches the agent over
    // TLS too (verified as agent.agora).
    let mut config = SchedulerConfig::new(&master, "over-tls");
    config.tls = Some(agora_rpc::tls::ClientTls::load(&pki.join("ca.pem"), None).unwrap());
    let (scheduler, mut events) = agora_sdk::subscribe(config).await.unwrap();
    let offer = next_matching(&mut events, |e| match e {
        Event::Offers(o) => o.first().cloned(),
        _ => None,
    })
    .await;
    let task = TaskBuilder::new("secure-task", &offer)
        .command("echo over-tls")
        .cpus(0.1)
        .mem(16.0)
        .build();
    scheduler.launch(&offer, vec![task], 0.0).await.unwrap();
    let end = next_matching(&mut events, |e| match e {
        Event::Update(s) if agora_proto::status::is_terminal(s.state()) => Some(s.clone()),
        _ => None,
    })
    .await;
    assert_eq!(end.state(), TaskState::TaskFinished, "{end:?}");
}

/// `agora dev`, the README's first command, runs secured by default: TLS
/// everywhere with a CA it makes, credentials it makes, and `agora app`
/// finding both by itself; curl with `--cacert` and `-u`; pymesos with its
/// principal and secret over plain HTTP (which pymesos needs and dev
/// allows); no anonymous access. Restarted, it keeps its secrets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agora_dev_is_secure_by_default_and_its_clients_find_their_way() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("dev");
    let mut dev = crate::cluster::Dev::start(&work, 2).await;
    let (port, marathon_port, dns_port) = (dev.port, dev.marathon_port, dev.dns_port);
    let secrets = work.join("secrets");
    let mode = |f: &str| {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(secrets.join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(
        (mode("credentials.json"), mode("ca-key.pem")),
        (0o600, 0o600)
    );
    let cli: Value =
        serde_json::from_str(&std::fs::read_to_string(secrets.join("cli.json")).unwrap()).unwrap();
    let (user, password) = (
        cli["user"].as_str().unwrap().to_string(),
        cli["password"].as_str().unwrap().to_string(),
    );
    let ca_file = secrets.join("ca.pem").display().to_string();
    let master = format!("https://127.0.0.1:{port}");
    // curl: anonymous 401, with the admin's credentials 200.
    let (_, out) = curl(&[
        "--cacert",
        &ca_file,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("{master}/master/state"),
    ]);
    assert_eq!(out, "401");
    let (ok, out) = curl(&[
        "--cacert",
        &ca_file,
        "-u",
        &format!("{user}:{password}"),
        &format!("{master}/master/slaves"),
    ]);
    assert!(ok && out.contains(r#""hostname":"127.0.0.3""#), "{out}");
    // agora app finds marathon-rs, the CA and the credentials by itself.
    let file = dir.path().join("app.json");
    std::fs::write(
        &file,
        r#"{"id": "/dev/web", "cmd": "sleep 600", "cpus": 0.1, "mem": 16, "instances": 2}"#,
    )
    .unwrap();
    let out = dev.agora(&["app", "deploy", file.to_str().unwrap()]);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("(2/2 running)"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The marathon client from PyPI over TLS, verifying against the CA.
    match crate::cluster::venv_python("marathon") {
        Some(python) => {
            let script = "import sys\nfrom marathon import MarathonClient\n\
                c = MarathonClient(sys.argv[1], username=sys.argv[2], password=sys.argv[3], verify=sys.argv[4])\n\
                print([a.id for a in c.list_apps()])";
            let out = std::process::Command::new(python)
                .args([
                    "-c",
                    script,
                    &format!("https://127.0.0.1:{marathon_port}"),
                    &user,
                    &password,
                    &ca_file,
                ])
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.contains("/dev/web"),
                "{stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        None => {
            crate::cluster::missing("the marathon client in .venv (run tests/python/setup-venv.sh)")
        }
    }
    // marathon-rs refuses anonymous requests.
    let (_, out) = curl(&[
        "--cacert",
        &ca_file,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("https://127.0.0.1:{marathon_port}/v2/apps"),
    ]);
    assert_eq!(out, "401");
    // pymesos with the admin's principal and secret.
    match crate::pymesos::python() {
        Some(python) => {
            let summary = crate::pymesos::run_scheduler_as(
                &python,
                &format!("127.0.0.1:{port}"),
                "command",
                1,
                Some((&user, &password)),
            )
            .await;
            assert_eq!(summary["completed"], true, "{summary}");
        }
        None => crate::cluster::missing("pymesos in .venv (run tests/python/setup-venv.sh)"),
    }
    // agora dns (which authenticates to the master over TLS) names the app.
    if crate::cluster::dig_available() {
        eventually("agora dns names the app", || async {
            let out = std::process::Command::new("dig")
                .args([
                    "@127.0.0.1",
                    "-p",
                    &dns_port.to_string(),
                    "+short",
                    "web-dev.marathon.mesos",
                ])
                .output()
                .ok()?;
            (!String::from_utf8_lossy(&out.stdout).trim().is_empty()).then_some(())
        })
        .await;
    }
    // Stopped and started again, it keeps its secrets.
    let before = std::fs::read(secrets.join("credentials.json")).unwrap();
    dev.restart().await;
    assert_eq!(
        std::fs::read(secrets.join("credentials.json")).unwrap(),
        before
    );
    dev.stop().await;
}

/// agora dns' HTTP API speaks TLS with a certificate (its DNS stays open,
/// as Mesos-DNS').
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dns_http_api_speaks_tls() {
    let dir = tempfile::tempdir().unwrap();
    ca(dir.path(), &["init"]);
    ca(
        dir.path(),
        &["issue", "--role", "client", "dns-1", "127.0.0.1"],
    );
    let p = |f: &str| dir.path().join(f);
    let tls =
        agora_rpc::tls::Tls::load(&p("dns-1.pem"), &p("dns-1-key.pem"), &p("ca.pem")).unwrap();
    let mut o = agora_dns::DnsOptions::new("127.0.0.1:1");
    o.http_transport = agora_rpc::serve::Transport::tls(std::sync::Arc::new(tls), false);
    let (udp, tcp) = agora_dns::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dns = agora_dns::start(o, udp, tcp, Some(http)).await.unwrap();
    let url = format!("https://{}/v1/version", dns.http_addr.unwrap());
    let ca_file = p("ca.pem").display().to_string();
    let (ok, out) = curl(&["--cacert", &ca_file, &url]);
    assert!(ok && out.contains("Service"), "{out}");
    let (_, out) = curl(&[&url.replace("https", "http")]);
    assert!(out.contains("speaks TLS"), "{out}");
    dns.stop().await;
}
