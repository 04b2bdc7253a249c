//! The shared fixtures of the end-to-end tests, in one place: a master and
//! agents in this process on ephemeral ports (the real `agora` binary as
//! the command executor), free ports, `eventually`, `dig`, the venv's
//! Python, and how a missing component skips or fails a test.

use std::path::{Path, PathBuf};
use std::time::Duration;

use agora_agent::{AgentOptions, RunningAgent};
use agora_master::{MasterOptions, RunningMaster};
use agora_master_core::Config;
use agora_proto::resources::{Resources, parse_attributes};
use serde_json::Value;
use tokio::net::TcpListener;

pub fn agora_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_agora"))
}

pub struct Cluster {
    pub master: RunningMaster,
    pub agents: Vec<RunningAgent>,
    pub dir: tempfile::TempDir,
}

pub async fn start_master(config: Config, listener: TcpListener) -> RunningMaster {
    let options = MasterOptions {
        config,
        hostname: Some("127.0.0.1".into()),
        flags: vec![],
        seed: 7,
        ..Default::default()
    };
    agora_master::start(options, listener).await.unwrap()
}

pub async fn start_agent(master: &str, dir: &Path, i: usize, resources: &str) -> RunningAgent {
    let mut o = AgentOptions::new(
        master.to_string(),
        dir.join(format!("agent-{i}")),
        agora_bin(),
    );
    o.hostname = format!("agent-{i}");
    o.resources = Some(Resources::parse(resources, "*").unwrap());
    o.attributes = parse_attributes(&format!("rack:r{i}")).unwrap();
    o.executor_shutdown_grace_period = Duration::from_secs(2);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agent = agora_agent::start(o, listener).await.unwrap();
    agent
        .registered(Duration::from_secs(10))
        .await
        .expect("agent registers");
    agent
}

impl Cluster {
    /// A master and `n` agents with `resources` each (agent i gets its own
    /// port range).
    pub async fn start(n: usize, resources: &str) -> Cluster {
        Self::with_config(
            n,
            resources,
            Config {
                allocation_interval: Duration::from_millis(200),
                ..Config::default()
            },
        )
        .await
    }

    pub async fn with_config(n: usize, resources: &str, config: Config) -> Cluster {
        // Tests run at the same time: each cluster takes its own block of
        // host ports (below the ephemeral range), 200 per agent, so that
        // two tests never hand the same port to two tasks.
        static BLOCK: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let block = BLOCK.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 33;
        let dir = tempfile::tempdir().unwrap();
        let master = start_master(config, TcpListener::bind("127.0.0.1:0").await.unwrap()).await;
        let mut agents = Vec::new();
        for i in 1..=n {
            assert!(n <= 3, "a test cluster has at most 3 agents");
            let base = 12000 + block * 600 + (i - 1) * 200;
            let r = format!("{resources};ports:[{base}-{}]", base + 199);
            agents.push(start_agent(&master.address(), dir.path(), i, &r).await);
        }
        Cluster {
            master,
            agents,
            dir,
        }
    }

    pub fn master(&self) -> String {
        self.master.address()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.master.address())
    }

    /// POSTs JSON to the master: the status and the body.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, String) {
        let resp = reqwest::Client::new()
            .post(self.url(path))
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    pub async fn stop(self) {
        for a in self.agents {
            a.stop().await;
        }
        self.master.stop().await;
    }
}

/// Whether a process whose command line contains `marker` is alive.
pub fn process_alive(marker: &str) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|e| {
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'));
        text.contains(marker) && !zombie && !text.contains("pgrep")
    })
}

/// Whether tests that need an optional component must fail instead of skip.
pub fn require_all() -> bool {
    std::env::var("AGORA_REQUIRE_ALL").is_ok_and(|v| v == "1")
}

/// Skips (or, under AGORA_REQUIRE_ALL=1, fails) a test for a missing component.
pub fn missing(component: &str) {
    if require_all() {
        panic!("{component} is required (AGORA_REQUIRE_ALL=1) but missing");
    }
    eprintln!("SKIPPED: {component} is not available");
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's python (or `AGORA_PYTHON`), if it can import `module`.
pub fn venv_python(module: &str) -> Option<PathBuf> {
    let p = std::env::var_os("AGORA_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv/bin/python"));
    let ok = std::process::Command::new(&p)
        .args(["-c", &format!("import {module}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(p)
}

/// An `agora agent` process of its own, so that it can be stopped and
/// started again while its executors keep running.
pub struct AgentProcess {
    child: std::process::Child,
    args: Vec<String>,
    log: std::path::PathBuf,
}

impl AgentProcess {
    pub fn start(master: &str, dir: &std::path::Path, port: u16) -> AgentProcess {
        let args: Vec<String> = [
            "agent",
            "--insecure",
            "--master",
            master,
            "--ip",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--hostname",
            "agent-r",
            "--resources",
            "cpus:2;mem:2048;disk:1000;ports:[34000-34099]",
            "--work-dir",
            &dir.join("agent").display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let log = dir.join("agent.log");
        let mut a = AgentProcess {
            child: std::process::Command::new("true").spawn().unwrap(),
            args,
            log,
        };
        a.spawn();
        a
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        self.child = std::process::Command::new(agora_bin())
            .args(&self.args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
    }

    pub fn signal(&mut self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "agent exited with {status}: {}",
            self.log()
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a host that dies: nothing is said to the master.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn free_port() -> u16 {
    // Below the kernel's ephemeral range (32768 and up), each handed out
    // once by this process: a port-0 bind or an outgoing connection of
    // another test cannot take it before its user binds it (seen in CI as
    // "Address already in use" when ports came from binding port 0).
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let base = 20_000 + (std::process::id() % 20) * 600;
    loop {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = u16::try_from(base + n % 600).expect("below 32,000");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Every framework's tasks in the master's state, once its first agent is
/// active again.
pub async fn master_tasks(cluster: &Cluster) -> Option<Vec<Value>> {
    let state: Value = reqwest::get(cluster.url("/master/state"))
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let active = state["slaves"][0]["active"] == true;
    active.then(|| {
        state["frameworks"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|f| f["tasks"].as_array().cloned().unwrap_or_default())
            .collect()
    })
}

/// Polls `f` until it yields, failing after 60 s with `what`.
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(t) = f().await {
            return t;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) fn dig_available() -> bool {
    let ok = std::process::Command::new("dig")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        missing("dig (bind9-dnsutils)");
    }
    ok
}

/// `dig +short` lines (sorted).
pub(crate) fn dig(dns: &agora_dns::RunningDns, args: &[&str]) -> Vec<String> {
    let out = std::process::Command::new("dig")
        .arg(format!("@{}", dns.addr.ip()))
        .args([
            "-p",
            &dns.addr.port().to_string(),
            "+short",
            "+time=2",
            "+tries=1",
        ])
        .args(args)
        .output()
        .unwrap();
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect();
    lines.sort();
    lines
}

/// `agora dev`, the README's first command, in a work dir of the test's:
/// its master on a free port with its agents on the next ones,
/// marathon-rs and agora dns on free ports, agora lb off.
pub struct Dev {
    pub child: tokio::process::Child,
    pub args: Vec<String>,
    pub log: PathBuf,
    pub work: PathBuf,
    pub port: u16,
    pub marathon_port: u16,
    pub dns_port: u16,
}

impl Dev {
    /// Starts `agents` agents of `cpus:2;mem:1024` and waits until the
    /// cluster says it is up.
    pub async fn start(work: &Path, agents: u16) -> Dev {
        let port = loop {
            let p = free_port();
            if (1..=agents).all(|i| std::net::TcpListener::bind(("127.0.0.1", p + i)).is_ok()) {
                break p;
            }
        };
        let (marathon_port, dns_port) = (free_port(), free_port());
        let args: Vec<String> = [
            "dev",
            "--agents",
            &agents.to_string(),
            "--port",
            &port.to_string(),
            "--marathon-port",
            &marathon_port.to_string(),
            "--dns-port",
            &dns_port.to_string(),
            "--lb-http-port",
            "0",
            "--agent-resources",
            "cpus:2;mem:1024",
            "--work-dir",
            &work.display().to_string(),
        ]
        .map(String::from)
        .to_vec();
        std::fs::create_dir_all(work).unwrap();
        let log = work.with_extension("log");
        let mut dev = Dev {
            child: Self::spawn(&args, &log),
            args,
            log,
            work: work.to_path_buf(),
            port,
            marathon_port,
            dns_port,
        };
        dev.wait_up().await;
        dev
    }

    fn spawn(args: &[String], log: &Path) -> tokio::process::Child {
        let f = std::fs::File::create(log).unwrap();
        tokio::process::Command::new(agora_bin())
            .args(args)
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap()
    }

    fn terminate(&self) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }

    /// Stops it as Ctrl-C does: its tasks are killed.
    pub async fn stop(mut self) {
        self.terminate();
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
    }

    async fn wait_up(&mut self) {
        let log = self.log.clone();
        eventually("agora dev is up", || async {
            std::fs::read_to_string(&log)
                .ok()?
                .contains("Agora dev cluster is up")
                .then_some(())
        })
        .await;
    }

    /// Stops it (SIGTERM) and starts it again on the same work dir.
    pub async fn restart(&mut self) {
        self.terminate();
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        self.child = Self::spawn(&self.args, &self.log);
        self.wait_up().await;
    }

    /// `agora ARGS` as a person on this machine runs it: no flags naming the
    /// cluster, only AGORA_WORK_DIR (the CLI finds the rest there).
    pub fn agora(&self, args: &[&str]) -> std::process::Output {
        tokio::task::block_in_place(|| {
            std::process::Command::new(agora_bin())
                .args(args)
                .env_remove("AGORA_MARATHON")
                .env_remove("AGORA_MASTER_URL")
                .env_remove("AGORA_PRINCIPAL")
                .env_remove("AGORA_SECRET")
                .env_remove("AGORA_CA_FILE")
                .env("AGORA_WORK_DIR", &self.work)
                .output()
                .unwrap()
        })
    }
}

impl Drop for Dev {
    /// A failed test's cluster stops too, and kills its tasks.
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Asserts that `promtool check metrics` (Debian's prometheus) accepts
/// `text` from `what`, lint included; without promtool, says so.
pub fn promtool_accepts(what: &str, text: &str) {
    use std::io::Write as _;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        missing("promtool (Debian's prometheus package)");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool refuses {what}'s metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of the sample `series` (its name with labels, exactly as
/// exposed) in a Prometheus text exposition.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter_map(|l| l.strip_prefix(series))
        .filter_map(|rest| rest.strip_prefix(' '))
        .find_map(|v| v.trim().parse().ok())
}
