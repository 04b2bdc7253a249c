//! `agora lb`: HAProxy configuration from marathon-rs, as marathon-lb writes it.

use anyhow::Context as _;
use clap::Args;

/// Flags of `agora lb` (marathon-lb's names).
#[derive(Args, Debug, Clone)]
pub struct LbArgs {
    /// marathon-rs (or Marathon), e.g. `http://127.0.0.1:8080`.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub marathon: String,
    /// Apps whose `HAPROXY_GROUP` lists this group are served (`*`: all).
    #[arg(long, default_value = "external")]
    pub group: String,
    /// Print the configuration and exit. (Writing, validating and reloading
    /// HAProxy comes next; today this is the only mode.)
    #[arg(long, required = true)]
    pub dry_run: bool,
    /// The HTTP (virtual host) frontend's port.
    #[arg(long, default_value_t = 80)]
    pub bind_http_port: u16,
    /// The stats page's port.
    #[arg(long, default_value_t = 9090)]
    pub stats_port: u16,
}

pub async fn run(args: LbArgs) -> anyhow::Result<()> {
    let base = args.marathon.trim_end_matches('/');
    let url = format!("{base}/v2/apps?embed=apps.tasks");
    let apps: serde_json::Value = reqwest::get(&url)
        .await
        .with_context(|| format!("cannot reach {url} (--marathon)"))?
        .error_for_status()
        .with_context(|| format!("{url} (--marathon)"))?
        .json()
        .await
        .with_context(|| format!("{url} did not answer with apps"))?;
    let settings = agora_lb::Settings {
        group: args.group.clone(),
        http_bind: format!("*:{}", args.bind_http_port),
        stats_bind: format!("*:{}", args.stats_port),
        ..agora_lb::Settings::default()
    };
    let (services, errors) = agora_lb::services(&apps, &settings, &agora_lb::resolve_host);
    for e in &errors {
        eprintln!("left out: {e}");
    }
    print!("{}", agora_lb::render(&services, &settings)?);
    Ok(())
}
