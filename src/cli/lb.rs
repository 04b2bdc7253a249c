//! `agora lb`: HAProxy for marathon-rs apps, configured the way marathon-lb
//! configures it, kept current by following `/v2/events`.

use std::path::PathBuf;
use std::time::Duration;

use agora_lb::haproxy::Haproxy;
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
    /// HAProxy's admin socket.
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
    /// Full resync from `/v2/apps` at least this often.
    #[arg(long, default_value = "30s", value_parser = humantime_duration)]
    pub resync: Duration,
}

impl LbArgs {
    fn settings(&self) -> agora_lb::Settings {
        agora_lb::Settings {
            group: self.group.clone(),
            http_bind: format!("*:{}", self.bind_http_port),
            appid_bind: format!("*:{}", self.appid_port),
            stats_bind: format!("*:{}", self.stats_port),
            socket: self.socket.display().to_string(),
            state_file: self.state_file.display().to_string(),
        }
    }
}

/// The configuration for marathon's apps now, with the apps left out.
async fn generate(
    client: &reqwest::Client,
    base: &str,
    settings: &agora_lb::Settings,
) -> anyhow::Result<(String, Vec<agora_lb::LabelError>)> {
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
    let (services, errors) = agora_lb::services(&apps, settings, &agora_lb::resolve_host);
    Ok((agora_lb::render(&services, settings)?, errors))
}

async fn sync(
    client: &reqwest::Client,
    base: &str,
    settings: &agora_lb::Settings,
    haproxy: &mut Haproxy,
) {
    match generate(client, base, settings).await {
        Ok((text, errors)) => {
            for e in &errors {
                warn!("left out: {e}");
            }
            match haproxy.apply(&text) {
                Ok(true) => info!(reloads = haproxy.reloads, "HAProxy configuration applied"),
                Ok(false) => {}
                Err(e) => warn!("{e}"),
            }
        }
        Err(e) => warn!("{e:#}"),
    }
}

pub async fn run(args: LbArgs) -> anyhow::Result<()> {
    let base = args.marathon.trim_end_matches('/').to_string();
    let settings = args.settings();
    let client = reqwest::Client::new();
    if args.dry_run {
        let (text, errors) = generate(&client, &base, &settings).await?;
        for e in &errors {
            eprintln!("left out: {e}");
        }
        print!("{text}");
        return Ok(());
    }
    for path in [&args.socket, &args.state_file] {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
    }
    let mut haproxy = Haproxy::new(&args.haproxy_bin, &args.haproxy_config);
    eprintln!(
        "agora lb: following {base} (group {}), HAProxy with {}",
        args.group,
        args.haproxy_config.display()
    );
    let mut stop = std::pin::pin!(super::shutdown_signal());
    loop {
        let events = client
            .get(format!("{base}/v2/events"))
            .header("Accept", "text/event-stream")
            .send()
            .await;
        sync(&client, &base, &settings, &mut haproxy).await;
        let mut stream = match events {
            Ok(r) if r.status().is_success() => r.bytes_stream(),
            Ok(r) => {
                warn!(status = %r.status(), "cannot follow /v2/events; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
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
        loop {
            tokio::select! {
                chunk = stream.next() => match chunk {
                    Some(Ok(bytes)) => {
                        // Any event may change what is served; a burst
                        // (a deployment) settles into one sync.
                        if bytes.windows(6).any(|w| w == b"event:") {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            sync(&client, &base, &settings, &mut haproxy).await;
                        }
                    }
                    _ => { warn!("the event stream ended; reconnecting"); break; }
                },
                _ = resync.tick() => sync(&client, &base, &settings, &mut haproxy).await,
                _ = &mut stop => {
                    eprintln!("stopping HAProxy");
                    haproxy.stop();
                    return Ok(());
                }
            }
        }
    }
    haproxy.stop();
    Ok(())
}
