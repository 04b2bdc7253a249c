//! The agora lb daemon: follows marathon-rs' `/v2/events` (one sync per
//! burst, 20 ms after its first event, and every `resync`), fetches
//! `/v2/apps?embed=apps.tasks`, turns them into services ([`crate::services`])
//! and applies them to its HAProxy child ([`crate::haproxy`]: the Runtime
//! API when only servers changed, else a checked reload), and serves
//! `/metrics` (Prometheus) and `/status` (JSON). The command line
//! (`agora lb`) only fills in [`Options`].

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use tracing::{info, warn};

use crate::haproxy::{Applied, Haproxy, Stats};
use crate::{LabelError, Service, Settings};

/// How to run the daemon.
pub struct Options {
    /// marathon-rs' base URLs, tried in turn (at least one).
    pub marathons: Vec<String>,
    /// The client for it (TLS and credentials set).
    pub client: reqwest::Client,
    /// What to render and serve.
    pub settings: Settings,
    /// The HAProxy binary.
    pub haproxy_bin: PathBuf,
    /// The configuration file HAProxy runs with.
    pub haproxy_config: PathBuf,
    /// HAProxy's admin socket.
    pub socket: PathBuf,
    /// HAProxy's server-state file.
    pub state_file: PathBuf,
    /// Port of `/metrics` and `/status` (0: none).
    pub metrics_port: u16,
    /// How that port speaks.
    pub metrics_transport: agora_rpc::serve::Transport,
    /// Full resync at least this often.
    pub resync: Duration,
}

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// No marathon-rs URL was given.
    #[error("no marathon-rs to follow (--marathon)")]
    NoMarathon,
    /// marathon-rs could not be read.
    #[error("{url}: {source}")]
    Marathon {
        /// What was asked.
        url: String,
        /// Why it failed.
        source: reqwest::Error,
    },
    /// A file or directory could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The metrics port could not be bound.
    #[error("cannot listen on {addr} (--metrics-port, 0 for none): {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
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
pub async fn services(
    client: &reqwest::Client,
    base: &str,
    settings: &Settings,
) -> Result<(Vec<Service>, Vec<LabelError>), DaemonError> {
    let url = format!("{base}/v2/apps?embed=apps.tasks");
    let apps: serde_json::Value = client
        .get(&url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|source| DaemonError::Marathon {
            url: url.clone(),
            source,
        })?
        .json()
        .await
        .map_err(|source| DaemonError::Marathon { url, source })?;
    Ok(crate::services(&apps, settings, &crate::resolve_host))
}

async fn sync(
    client: &reqwest::Client,
    base: &str,
    settings: &Settings,
    haproxy: &mut Haproxy,
    status: &Mutex<Status>,
) {
    let (services, errors) = match services(client, base, settings).await {
        Ok(s) => s,
        Err(e) => {
            warn!("{e}");
            lock(status).stats.last_error = Some(e.to_string());
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
) -> Result<SocketAddr, DaemonError> {
    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| DaemonError::Listen { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| DaemonError::Listen { addr, source })?;
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

/// Runs HAProxy for marathon's apps until `stop` resolves.
pub async fn follow(args: Options, stop: impl Future<Output = ()>) -> Result<(), DaemonError> {
    let marathons: Vec<String> = args
        .marathons
        .iter()
        .map(|m| m.trim_end_matches('/').to_string())
        .collect();
    if marathons.is_empty() {
        return Err(DaemonError::NoMarathon);
    }
    // The one followed now; the next one when it stops answering.
    let mut current = 0;
    let settings = args.settings;
    let client = args.client;
    for path in [&args.socket, &args.state_file, &args.haproxy_config] {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| DaemonError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
    }
    // An empty server-state file (its version line): HAProxy warns about a
    // missing one. agora lb does not dump states into it (a dump would
    // restore slot addresses over the rendered ones).
    if !args.state_file.exists() {
        std::fs::write(&args.state_file, "1\n").map_err(|source| DaemonError::Io {
            path: args.state_file.clone(),
            source,
        })?;
    }
    let status = Arc::new(Mutex::new(Status::default()));
    if args.metrics_port != 0 {
        serve_metrics(args.metrics_port, status.clone(), args.metrics_transport).await?;
    }
    let mut haproxy = Haproxy::new(&args.haproxy_bin, &args.haproxy_config, &args.socket);
    info!(
        marathon = %marathons.join(","),
        group = %settings.group,
        config = %args.haproxy_config.display(),
        "agora lb: following marathon"
    );
    let mut stop = std::pin::pin!(stop);
    loop {
        let base = marathons[current % marathons.len()].clone();
        let events = client
            .get(format!("{base}/v2/events"))
            .header("Accept", "text/event-stream")
            .send()
            .await;
        sync(&client, &base, &settings, &mut haproxy, &status).await;
        let mut stream = match events {
            Ok(r) if r.status().is_success() => r.bytes_stream(),
            Ok(r) => {
                warn!(marathon = %base, status = %r.status(), "cannot follow /v2/events; trying the next");
                current += 1;
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = &mut stop => break,
                }
            }
            Err(e) => {
                warn!(marathon = %base, error = %e, "cannot follow /v2/events; trying the next");
                current += 1;
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
                    _ => {
                        warn!(marathon = %base, "the event stream ended; reconnecting");
                        current += 1;
                        break;
                    }
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
