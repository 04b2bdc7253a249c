//! `agora lb`: HAProxy for marathon-rs apps, configured the way marathon-lb
//! configures it, kept current by following `/v2/events`; server changes go
//! through HAProxy's Runtime API, structural ones through a checked reload.
//! `/metrics` and `/status` on `--metrics-port` say what it did.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

/// Flags of `agora lb` (marathon-lb's names where it has them).
#[derive(Args, Debug, Clone)]
pub struct LbArgs {
    /// marathon-rs (or Marathon), e.g. `http://127.0.0.1:8080`; several
    /// (space or comma separated, as marathon-lb takes them) are tried in
    /// turn when one stops answering, so agora lb follows whichever of an
    /// HA pair is up.
    #[arg(long, num_args = 1.., value_delimiter = ',', default_value = "http://127.0.0.1:8080")]
    pub marathon: Vec<String>,
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
    #[arg(long, default_value = "30s", value_parser = agora_proto::duration::parse)]
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
            marathon: vec![marathon],
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

pub async fn run(args: LbArgs) -> anyhow::Result<()> {
    if args.dry_run {
        let base = args.marathon[0].trim_end_matches('/');
        let settings = args.settings()?;
        let (svcs, errors) = agora_lb::daemon::services(&args.client()?, base, &settings).await?;
        for e in &errors {
            eprintln!("left out: {e}");
        }
        print!("{}", agora_lb::render(&svcs, &settings)?);
        return Ok(());
    }
    follow(args, super::shutdown_signal()).await
}

/// Runs the daemon for these flags until `stop` resolves.
pub async fn follow(args: LbArgs, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    let options = agora_lb::daemon::Options {
        marathons: args.marathon.clone(),
        client: args.client()?,
        settings: args.settings()?,
        haproxy_bin: args.haproxy_bin.clone(),
        haproxy_config: args.haproxy_config.clone(),
        socket: args.socket.clone(),
        state_file: args.state_file.clone(),
        metrics_port: args.metrics_port,
        metrics_transport: args.tls.transport()?,
        resync: args.resync,
    };
    Ok(agora_lb::daemon::follow(options, stop).await?)
}
