//! `agora lb`: HAProxy for marathon-rs apps, configured the way marathon-lb
//! configures it, kept current by following `/v2/events`; server changes go
//! through HAProxy's Runtime API, structural ones through a checked reload.
//! `/metrics` and `/status` on `--metrics-port` say what it did.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agora_lb::haproxy::{Applied, Haproxy, Stats};
use anyhow::Context as _;
use clap::Args;
use futures::StreamExt as _;
use tracing::{info, warn};

use super::master::humantime_duration;

/// Flags of `agora lb` (marathon-lb's names where it has them).
#[derive(Args, Debug, Clone)]
pub struct LbArgs {
    /// marathon-rs (or Marathon), e.g. `http://127.0.0.1:8080`.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub marathon: String,
    /// Apps whose `HAPROXY_GROUP` lists this group are served (`*`: all).
    #[arg(long, default_value = "external")]
    pub group: String,
    /// Print the configuration once and exit.
    #[arg(long)]
    pub dry_run: bool,
    /// The configuration file HAProxy runs with.
    #[arg(long, default_value = "/etc/haproxy/haproxy.cfg")]
    pub haproxy_config: PathBuf,
    /// The HAProxy binary.
    #[arg(long, default_value = "haproxy")]
    pub haproxy_bin: PathBuf,
    /// HAProxy's admin socket (Runtime API, socket transfer on reload).
    #[arg(long, default_value = "/var/run/haproxy/socket")]
    pub socket: PathBuf,
    /// Where HAProxy keeps server state across reloads.
    #[arg(long, default_value = "/var/state/haproxy/global")]
    pub state_file: PathBuf,
    /// The HTTP (virtual host) frontend's port.
    #[arg(long, default_value_t = 80)]
    pub bind_http_port: u16,
    /// The app-id frontend's port (`X-Marathon-App-Id`).
    #[arg(long, default_value_t = 9091)]
    pub appid_port: u16,
    /// The stats page's port.
    #[arg(long, default_value_t = 9090)]
    pub stats_port: u16,
    /// Port of `/metrics` and `/status` (0: none).
    #[arg(long, default_value_t = 9092)]
    pub metrics_port: u16,
    /// The HTTPS (virtual host, by SNI) frontend's port; it exists only
    /// with --ssl-certs.
    #[arg(long, default_value_t = 443)]
    pub bind_https_port: u16,
    /// Certificates of the HTTPS frontend, comma separated (PEM files with
    /// their keys, as marathon-lb's `--ssl-certs`).
    #[arg(long, value_delimiter = ',')]
    pub ssl_certs: Vec<PathBuf>,
    /// Route virtual hosts and app ids through map files beside the
    /// configuration (`domain2backend.map`, `app2backend.map`) instead of one
    /// ACL each: constant-time routing for many virtual hosts.
    #[arg(long)]
    pub haproxy_map: bool,
    /// A directory of marathon-lb template overrides (`HAPROXY_HEAD`,
    /// `HAPROXY_HTTP_FRONTEND_HEAD`, `HAPROXY_HTTP_FRONTEND_APPID_HEAD`,
    /// `HAPROXY_HTTPS_FRONTEND_HEAD`, `HAPROXY_FRONTEND_HEAD`,
    /// `HAPROXY_BACKEND_HEAD`).
    #[arg(long)]
    pub templates: Option<PathBuf>,
    /// Full resync from `/v2/apps` at least this often.
    #[arg(long, default_value = "30s", value_parser = humantime_duration)]
    pub resync: Duration,
    /// Credentials for marathon-rs, `user:pass` (marathon-lb's flag).
    #[arg(long, env = "AGORA_MARATHON_CREDENTIALS", hide_env_values = true,
          value_parser = super::auth_credentials)]
    pub auth_credentials: Option<(String, String)>,
    /// A file whose first line is `user:pass` (takes precedence, as in marathon-lb).
    #[arg(long)]
    pub marathon_auth_credential_file: Option<PathBuf>,
    /// The CA marathon-rs' certificate is verified against, for
    /// `https://` (marathon-lb's flag; unlike marathon-lb, an https URL is
    /// never used unverified).
    #[arg(long)]
    pub marathon_ca_cert: Option<PathBuf>,
    /// TLS for `/metrics` and `/status` (certificate, key, CA).
    #[command(flatten)]
    pub tls: super::TlsArgs,
}

impl LbArgs {
    /// The client for marathon-rs, with the credentials.
    fn client(&self) -> anyhow::Result<reqwest::Client> {
        let from_file = match &self.marathon_auth_credential_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("--marathon-auth-credential-file {}", path.display())
                })?;
                let line = text
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim_end_matches(['\r', '\n']);
                Some(super::auth_credentials(line).map_err(|e| {
                    anyhow::anyhow!("--marathon-auth-credential-file {}: {e}", path.display())
                })?)
            }
            None => None,
        };
        let credentials = from_file.or_else(|| self.auth_credentials.clone());
        Ok(
            super::marathon_client(credentials.as_ref(), self.marathon_ca_cert.as_deref())?
                .build()?,
        )
    }

    fn settings(&self) -> anyhow::Result<agora_lb::Settings> {
        let templates = match &self.templates {
            Some(dir) => {
                agora_lb::Templates::load(dir).map_err(|e| anyhow::anyhow!("--templates: {e}"))?
            }
            None => agora_lb::Templates::default(),
        };
        let mut ssl_certs = Vec::new();
        for c in &self.ssl_certs {
            let path = c.display().to_string();
            if path.is_empty() || path.chars().any(|ch| ch.is_whitespace() || ch == '#') {
                anyhow::bail!("--ssl-certs: '{path}' is not a usable path");
            }
            if !c.is_file() {
                anyhow::bail!("--ssl-certs: {path} is not a file");
            }
            ssl_certs.push(path);
        }
        let map_dir = if self.haproxy_map {
            let parent = self
                .haproxy_config
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let dir = std::path::absolute(parent)
                .unwrap_or_else(|_| parent.to_path_buf())
                .display()
                .to_string();
            if dir
                .chars()
                .any(|c| c.is_whitespace() || "(),#\"'".contains(c))
            {
                anyhow::bail!(
                    "--haproxy-map: the map files would go in '{dir}', which HAProxy cannot name (no spaces, quotes, commas or parentheses)"
                );
            }
            Some(dir)
        } else {
            None
        };
        Ok(agora_lb::Settings {
            group: self.group.clone(),
            https_bind: format!("*:{}", self.bind_https_port),
            ssl_certs,
            map_dir,
            http_bind: format!("*:{}", self.bind_http_port),
            appid_bind: format!("*:{}", self.appid_port),
            stats_bind: format!("*:{}", self.stats_port),
            socket: self.socket.display().to_string(),
            state_file: self.state_file.display().to_string(),
            templates,
        })
    }

    /// Unprivileged defaults under `dir`, for `agora dev`.
    pub fn dev(marathon: String, dir: &std::path::Path) -> LbArgs {
        LbArgs {
            marathon,
            group: "external".into(),
            dry_run: false,
            haproxy_config: dir.join("haproxy.cfg"),
            haproxy_bin: "haproxy".into(),
            socket: dir.join("socket"),
            state_file: dir.join("state"),
            bind_http_port: 9080,
            appid_port: 9091,
            stats_port: 9090,
            metrics_port: 9092,
            bind_https_port: 9443,
            ssl_certs: Vec::new(),
            haproxy_map: false,
            templates: None,
            resync: Duration::from_secs(30),
            auth_credentials: None,
            marathon_auth_credential_file: None,
            marathon_ca_cert: None,
            tls: super::TlsArgs::default(),
        }
    }
}

/// What `/status` and `/metrics` show.
#[derive(Debug, Default)]
struct Status {
    stats: Stats,
    /// Apps left out, with the label that keeps them out.
    left_out: Vec<String>,
    /// Syncs since the start.
    syncs: u64,
}

/// Marathon's apps now, as services, with the apps left out.
async fn services(
    client: &reqwest::Client,
    base: &str,
    settings: &agora_lb::Settings,
) -> anyhow::Result<(Vec<agora_lb::Service>, Vec<agora_lb::LabelError>)> {
    let url = format!("{base}/v2/apps?embed=apps.tasks");
    let apps: serde_json::Value = client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("cannot reach {url} (--marathon)"))?
        .error_for_status()
        .with_context(|| format!("{url} (--marathon)"))?
        .json()
        .await
        .with_context(|| format!("{url} did not answer with apps"))?;
    Ok(agora_lb::services(&apps, settings, &agora_lb::resolve_host))
}

async fn sync(
    client: &reqwest::Client,
    base: &str,
    settings: &agora_lb::Settings,
    haproxy: &mut Haproxy,
    status: &Mutex<Status>,
) {
    let (services, errors) = match services(client, base, settings).await {
        Ok(s) => s,
        Err(e) => {
            warn!("{e:#}");
            lock(status).stats.last_error = Some(format!("{e:#}"));
            return;
        }
    };
    for e in &errors {
        warn!("left out: {e}");
    }
    // Checks and reloads block: off the runtime's worker.
    let applied = tokio::task::block_in_place(|| haproxy.apply(&services, settings));
    match applied {
        Ok(Applied::Unchanged) => {}
        Ok(Applied::Runtime(n)) => info!(
            commands = n,
            took = ?haproxy.stats.last_apply,
            "servers changed through the Runtime API"
        ),
        Ok(Applied::Reloaded) => info!(
            reloads = haproxy.stats.reloads,
            took = ?haproxy.stats.last_apply,
            "HAProxy reloaded"
        ),
        Ok(Applied::Started) => info!(took = ?haproxy.stats.last_apply, "HAProxy started"),
        Err(e) => warn!("{e}"),
    }
    let mut s = lock(status);
    s.stats = haproxy.stats.clone();
    s.left_out = errors.iter().map(ToString::to_string).collect();
    s.syncs += 1;
}

fn lock(status: &Mutex<Status>) -> std::sync::MutexGuard<'_, Status> {
    status
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn metrics(s: &Status) -> String {
    let st = &s.stats;
    let metrics: [(&str, &str, &str, String); 10] = [
        (
            "agora_lb_reloads_total",
            "counter",
            "HAProxy reloads (configuration changes).",
            st.reloads.to_string(),
        ),
        (
            "agora_lb_runtime_updates_total",
            "counter",
            "Server changes applied through the HAProxy Runtime API, without a reload.",
            st.runtime_updates.to_string(),
        ),
        (
            "agora_lb_runtime_commands_total",
            "counter",
            "Runtime API commands sent.",
            st.runtime_commands.to_string(),
        ),
        (
            "agora_lb_failed_checks_total",
            "counter",
            "Configurations refused by haproxy -c (never applied).",
            st.failed_checks.to_string(),
        ),
        (
            "agora_lb_render_seconds",
            "gauge",
            "Time to render the last configuration.",
            st.last_render.as_secs_f64().to_string(),
        ),
        (
            "agora_lb_apply_seconds",
            "gauge",
            "Time to apply the last change until HAProxy served it.",
            st.last_apply.as_secs_f64().to_string(),
        ),
        (
            "agora_lb_backends",
            "gauge",
            "Backends served.",
            st.backends.to_string(),
        ),
        (
            "agora_lb_servers",
            "gauge",
            "Servers receiving traffic.",
            st.servers.to_string(),
        ),
        (
            "agora_lb_apps_left_out",
            "gauge",
            "Apps left out for a bad label.",
            s.left_out.len().to_string(),
        ),
        (
            "agora_lb_last_error",
            "gauge",
            "1 when the last sync failed (see /status for why).",
            u8::from(st.last_error.is_some()).to_string(),
        ),
    ];
    metrics
        .iter()
        .map(|(name, kind, help, value)| {
            format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n")
        })
        .collect()
}

fn status_json(s: &Status) -> serde_json::Value {
    serde_json::json!({
        "syncs": s.syncs,
        "reloads": s.stats.reloads,
        "runtimeUpdates": s.stats.runtime_updates,
        "runtimeCommands": s.stats.runtime_commands,
        "failedChecks": s.stats.failed_checks,
        "renderSeconds": s.stats.last_render.as_secs_f64(),
        "applySeconds": s.stats.last_apply.as_secs_f64(),
        "backends": s.stats.backends,
        "servers": s.stats.servers,
        "lastError": s.stats.last_error,
        "leftOut": s.left_out,
    })
}

async fn serve_metrics(
    port: u16,
    status: Arc<Mutex<Status>>,
    transport: agora_rpc::serve::Transport,
) -> anyhow::Result<SocketAddr> {
    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (--metrics-port, 0 for none)"))?;
    let local = listener.local_addr()?;
    let routes = agora_rpc::http::handle(64 * 1024, move |req| {
        let status = status.clone();
        async move {
            use agora_rpc::http::{body, text};
            use http::{Method, StatusCode};
            let s = lock(&status);
            match (req.method, req.path.as_str()) {
                (Method::GET, "/metrics") => {
                    body(StatusCode::OK, "text/plain; version=0.0.4", metrics(&s))
                }
                (Method::GET, "/status") => body(
                    StatusCode::OK,
                    "application/json",
                    status_json(&s).to_string(),
                ),
                _ => text(
                    StatusCode::NOT_FOUND,
                    "agora lb serves /metrics and /status",
                ),
            }
        }
    });
    tokio::spawn(agora_rpc::http::serve_with(
        listener,
        transport,
        routes,
        std::future::pending(),
    ));
    Ok(local)
}

pub async fn run(args: LbArgs) -> anyhow::Result<()> {
    if args.dry_run {
        let base = args.marathon.trim_end_matches('/');
        let settings = args.settings()?;
        let (svcs, errors) = services(&args.client()?, base, &settings).await?;
        for e in &errors {
            eprintln!("left out: {e}");
        }
        print!("{}", agora_lb::render(&svcs, &settings)?);
        return Ok(());
    }
    follow(args, super::shutdown_signal()).await
}

/// Runs HAProxy for marathon's apps until `stop` resolves.
pub async fn follow(args: LbArgs, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    let base = args.marathon.trim_end_matches('/').to_string();
    let settings = args.settings()?;
    let client = args.client()?;
    for path in [&args.socket, &args.state_file, &args.haproxy_config] {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
    }
    // An empty server-state file (its version line): HAProxy warns about a
    // missing one. agora lb does not dump states into it (a dump would
    // restore slot addresses over the rendered ones).
    if !args.state_file.exists() {
        std::fs::write(&args.state_file, "1\n").with_context(|| {
            format!("cannot write {} (--state-file)", args.state_file.display())
        })?;
    }
    let status = Arc::new(Mutex::new(Status::default()));
    if args.metrics_port != 0 {
        serve_metrics(args.metrics_port, status.clone(), args.tls.transport()?).await?;
    }
    let mut haproxy = Haproxy::new(&args.haproxy_bin, &args.haproxy_config, &args.socket);
    info!(
        marathon = %base,
        group = %args.group,
        config = %args.haproxy_config.display(),
        "agora lb: following marathon"
    );
    let mut stop = std::pin::pin!(stop);
    loop {
        let events = client
            .get(format!("{base}/v2/events"))
            .header("Accept", "text/event-stream")
            .send()
            .await;
        sync(&client, &base, &settings, &mut haproxy, &status).await;
        let mut stream = match events {
            Ok(r) if r.status().is_success() => r.bytes_stream(),
            Ok(r) => {
                warn!(status = %r.status(), "cannot follow /v2/events; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = &mut stop => break,
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot follow /v2/events; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = &mut stop => break,
                }
            }
        };
        let mut resync = tokio::time::interval(args.resync);
        resync.tick().await;
        // Events come in bursts (a deployment step): one sync per burst,
        // 20 ms after its first event.
        let mut due: Option<Instant> = None;
        loop {
            let wait = due.map(|d| d.saturating_duration_since(Instant::now()));
            tokio::select! {
                chunk = stream.next() => match chunk {
                    Some(Ok(bytes)) => {
                        // Any event may change what is served.
                        if due.is_none() && bytes.windows(6).any(|w| w == b"event:") {
                            due = Some(Instant::now() + Duration::from_millis(20));
                        }
                    }
                    _ => { warn!("the event stream ended; reconnecting"); break; }
                },
                _ = tokio::time::sleep(wait.unwrap_or_default()), if wait.is_some() => {
                    due = None;
                    sync(&client, &base, &settings, &mut haproxy, &status).await;
                }
                _ = resync.tick() => sync(&client, &base, &settings, &mut haproxy, &status).await,
                _ = &mut stop => {
                    info!("stopping HAProxy");
                    haproxy.stop();
                    return Ok(());
                }
            }
        }
    }
    haproxy.stop();
    Ok(())
}
