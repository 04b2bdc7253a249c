//! `agora app`: manage marathon-rs apps from the command line. Lists are
//! tables; `deploy`, `scale`, `restart` and `destroy` wait for their
//! deployment with a live progress bar (`--detach` returns at once).

use std::io::Read as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use comfy_table::Table;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use super::{table, text};

/// Flags of `agora app`.
#[derive(Args, Debug, Clone)]
pub struct AppArgs {
    /// marathon-rs' address.
    /// Default: the `agora dev` cluster in AGORA_WORK_DIR (/tmp/agora-dev),
    /// with its CA and admin credentials, else `http://localhost:8080`.
    #[arg(long, env = "AGORA_MARATHON")]
    pub marathon: Option<String>,
    /// Where `agora dev` keeps its state (its `secrets/cli.json` is read
    /// when --marathon is not given).
    #[arg(long, env = "AGORA_WORK_DIR", default_value = "/tmp/agora-dev")]
    pub work_dir: std::path::PathBuf,
    /// Credentials for marathon-rs, `user:pass`.
    #[arg(long, env = "AGORA_MARATHON_CREDENTIALS", hide_env_values = true,
          value_parser = super::auth_credentials)]
    pub auth_credentials: Option<(String, String)>,
    /// The cluster CA, for an `https://` --marathon.
    #[arg(long, env = "AGORA_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: AppCommand,
}

/// Options for commands that start a deployment.
#[derive(Args, Debug, Clone)]
pub struct Wait {
    /// Return as soon as the deployment has started.
    #[arg(long)]
    pub detach: bool,
    /// Override a deployment in progress on the same app.
    #[arg(long)]
    pub force: bool,
    /// Give up waiting after this many seconds (the deployment goes on).
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
}

/// `agora app` subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum AppCommand {
    /// List apps.
    List,
    /// Show an app and its tasks.
    Show {
        /// The app id, e.g. `/web/api`.
        id: String,
    },
    /// Create or update apps from a JSON file (one app or a list; `-` reads stdin).
    Deploy {
        /// The app definition.
        file: PathBuf,
        #[command(flatten)]
        wait: Wait,
    },
    /// Change the number of instances.
    Scale {
        /// The app id.
        id: String,
        /// Instances wanted.
        instances: u32,
        #[command(flatten)]
        wait: Wait,
    },
    /// Replace every task of an app (rolling, per its upgrade strategy).
    Restart {
        /// The app id.
        id: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Remove an app and kill its tasks.
    Destroy {
        /// The app id.
        id: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// List an app's tasks.
    Tasks {
        /// The app id.
        id: String,
    },
}

struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    fn new(
        base: &str,
        credentials: Option<&(String, String)>,
        ca: Option<&std::path::Path>,
    ) -> anyhow::Result<Client> {
        let base = super::base_url(base, "--marathon")?;
        let http = super::marathon_client(credentials, ca)?
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Client { base, http })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach marathon-rs at {} (--marathon)", self.base))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let v: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if !status.is_success() {
            let mut msg = v["message"]
                .as_str()
                .map_or_else(|| v.to_string(), str::to_string);
            for d in v["details"].as_array().into_iter().flatten() {
                msg.push_str(&format!(
                    "\n  {}: {}",
                    d["path"].as_str().unwrap_or(""),
                    d["errors"]
                ));
            }
            bail!("{method} {path}: {} {msg}", status.as_u16());
        }
        Ok(v)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }
}

fn app_path(id: &str) -> anyhow::Result<String> {
    let id = id.trim().trim_matches('/');
    if id.is_empty() {
        bail!("an app id is required, e.g. /web/api");
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-./".contains(c))
    {
        bail!("'{id}' is not an app id (lowercase letters, digits, '-', '.', '/')");
    }
    Ok(format!("/{id}"))
}

fn status_of(app: &Value) -> &'static str {
    let running = app["tasksRunning"].as_u64().unwrap_or(0);
    let instances = app["instances"].as_u64().unwrap_or(0);
    if app["deployments"].as_array().is_some_and(|d| !d.is_empty()) {
        "Deploying"
    } else if instances == 0 {
        "Suspended"
    } else if running < instances {
        "Waiting"
    } else {
        "Running"
    }
}

fn health(app: &Value) -> String {
    if app["healthChecks"].as_array().is_none_or(Vec::is_empty) {
        "—".into()
    } else {
        format!("{}/{}", app["tasksHealthy"], app["tasksRunning"])
    }
}

fn what(app: &Value) -> String {
    let s = app["cmd"]
        .as_str()
        .map(str::to_string)
        .or_else(|| {
            app["container"]["docker"]["image"]
                .as_str()
                .map(|i| format!("docker: {i}"))
        })
        .unwrap_or_default();
    if s.chars().count() > 48 {
        format!("{}…", s.chars().take(47).collect::<String>())
    } else {
        s
    }
}

fn task_table(tasks: &[Value], checked: bool) -> Table {
    let mut t = table(&["TASK", "HOST", "STATE", "HEALTH", "PORTS", "STARTED"]);
    for task in tasks {
        let health = if !checked {
            "—".to_string()
        } else {
            match task["healthCheckResults"][0]["alive"].as_bool() {
                Some(true) => "healthy".into(),
                Some(false) => "unhealthy".into(),
                None => "unknown".into(),
            }
        };
        let ports: Vec<String> = task["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect();
        t.add_row(vec![
            text(&task["id"]),
            text(&task["host"]),
            text(&task["state"]).trim_start_matches("TASK_").to_string(),
            health,
            ports.join(","),
            text(&task["startedAt"]),
        ]);
    }
    t
}

/// The Marathon client `args` name: `--marathon` and its credentials, else
/// the dev cluster on this machine (with its CA and credentials), else
/// localhost:8080.
fn client(args: &mut AppArgs) -> anyhow::Result<Client> {
    if args.marathon.is_none()
        && let Some(dev) = super::dev_secrets::cli_json(&args.work_dir)
    {
        let s = |k: &str| dev[k].as_str().map(str::to_string);
        args.marathon = s("marathon");
        args.ca_file = args.ca_file.take().or_else(|| s("ca").map(Into::into));
        args.auth_credentials = args
            .auth_credentials
            .take()
            .or_else(|| s("user").zip(s("password")));
    }
    let marathon = args
        .marathon
        .clone()
        .unwrap_or_else(|| "http://localhost:8080".into());
    Client::new(
        &marathon,
        args.auth_credentials.as_ref(),
        args.ca_file.as_deref(),
    )
}

pub async fn run(args: AppArgs) -> anyhow::Result<()> {
    let mut args = args;
    let c = client(&mut args)?;
    match args.command {
        AppCommand::List => list(&c).await?,
        AppCommand::Show { id } => show(&c, &id).await?,
        AppCommand::Tasks { id } => {
            let path = app_path(&id)?;
            let a = c.get(&format!("/v2/apps{path}")).await?["app"].clone();
            let tasks = a["tasks"].as_array().cloned().unwrap_or_default();
            let checked = a["healthChecks"].as_array().is_some_and(|h| !h.is_empty());
            if tasks.is_empty() {
                println!("{path} has no tasks.");
            } else {
                println!("{}", task_table(&tasks, checked));
            }
        }
        AppCommand::Deploy { file, wait } => deploy(&c, &file, &wait).await?,
        AppCommand::Scale {
            id,
            instances,
            wait,
        } => {
            let path = app_path(&id)?;
            let force = if wait.force { "?force=true" } else { "" };
            let r = c
                .call(
                    reqwest::Method::PUT,
                    &format!("/v2/apps{path}{force}"),
                    Some(&json!({"instances": instances})),
                )
                .await?;
            follow(&c, &text(&r["deploymentId"]), &[path], &wait, "scaled").await?;
        }
        AppCommand::Restart { id, wait } => {
            let path = app_path(&id)?;
            let force = if wait.force { "?force=true" } else { "" };
            let r = c
                .call(
                    reqwest::Method::POST,
                    &format!("/v2/apps{path}/restart{force}"),
                    None,
                )
                .await?;
            follow(&c, &text(&r["deploymentId"]), &[path], &wait, "restarted").await?;
        }
        AppCommand::Destroy { id, wait } => {
            let path = app_path(&id)?;
            let r = c
                .call(
                    reqwest::Method::DELETE,
                    &format!("/v2/apps{path}?force={}", wait.force),
                    None,
                )
                .await?;
            follow(&c, &text(&r["deploymentId"]), &[path], &wait, "destroyed").await?;
        }
    }
    Ok(())
}

/// `agora app list`: a row per app.
async fn list(c: &Client) -> anyhow::Result<()> {
    let apps = c
        .get("/v2/apps?embed=apps.counts&embed=apps.deployments")
        .await?;
    let list = apps["apps"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("No apps. Deploy one with `agora app deploy app.json`.");
        return Ok(());
    }
    let mut t = table(&[
        "ID",
        "STATUS",
        "RUNNING",
        "HEALTHY",
        "CPUS",
        "MEM",
        "COMMAND / IMAGE",
    ]);
    for a in &list {
        t.add_row(vec![
            text(&a["id"]),
            status_of(a).into(),
            format!("{}/{}", a["tasksRunning"], a["instances"]),
            health(a),
            text(&a["cpus"]),
            text(&a["mem"]),
            what(a),
        ]);
    }
    println!("{t}");
    Ok(())
}

/// `agora app show ID`: the app's fields, then its tasks.
async fn show(c: &Client, id: &str) -> anyhow::Result<()> {
    let path = app_path(id)?;
    let a = c.get(&format!("/v2/apps{path}")).await?["app"].clone();
    let mut t = table(&["FIELD", "VALUE"]);
    t.add_row(vec!["id".into(), text(&a["id"])]);
    t.add_row(vec!["status".to_string(), status_of(&a).to_string()]);
    t.add_row(vec![
        "instances".into(),
        format!("{} running of {}", a["tasksRunning"], a["instances"]),
    ]);
    t.add_row(vec!["healthy".into(), health(&a)]);
    t.add_row(vec![
        "resources".into(),
        format!(
            "cpus {} · mem {} MB · disk {} MB",
            a["cpus"], a["mem"], a["disk"]
        ),
    ]);
    t.add_row(vec!["command".into(), what(&a)]);
    t.add_row(vec!["constraints".into(), text(&a["constraints"])]);
    let service: Vec<String> = a["portDefinitions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| text(&p["port"]))
        .collect();
    t.add_row(vec!["service ports".into(), service.join(",")]);
    t.add_row(vec!["version".into(), text(&a["version"])]);
    if let Some(f) = a.get("lastTaskFailure") {
        t.add_row(vec![
            "last failure".into(),
            format!(
                "{} {} ({})",
                text(&f["state"]),
                text(&f["message"]),
                text(&f["timestamp"])
            ),
        ]);
    }
    println!("{t}");
    let tasks = a["tasks"].as_array().cloned().unwrap_or_default();
    let checked = a["healthChecks"].as_array().is_some_and(|h| !h.is_empty());
    if !tasks.is_empty() {
        println!("{}", task_table(&tasks, checked));
    }
    Ok(())
}

/// `agora app deploy FILE`: PUT one app or a list, then follow the
/// deployment.
async fn deploy(c: &Client, file: &std::path::Path, wait: &Wait) -> anyhow::Result<()> {
    let raw = if file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read the app definition from stdin")?;
        s
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    let def: Value =
        serde_json::from_str(&raw).with_context(|| format!("{} is not JSON", file.display()))?;
    let apps: Vec<Value> = match def {
        Value::Array(a) => a,
        one @ Value::Object(_) => vec![one],
        _ => bail!(
            "{} must hold an app object or a list of apps",
            file.display()
        ),
    };
    let mut ids = Vec::new();
    for a in &apps {
        let Some(id) = a["id"].as_str() else {
            bail!("every app in {} needs an \"id\"", file.display())
        };
        ids.push(app_path(id)?);
    }
    let force = if wait.force { "?force=true" } else { "" };
    let deployment = if apps.len() == 1 {
        let path = &ids[0];
        let r = c
            .call(
                reqwest::Method::PUT,
                &format!("/v2/apps{path}{force}"),
                Some(&apps[0]),
            )
            .await?;
        text(&r["deploymentId"])
    } else {
        let sep = if force.is_empty() { "?" } else { "&" };
        let r = c
            .call(
                reqwest::Method::PUT,
                &format!("/v2/apps{force}{sep}partialUpdate=false"),
                Some(&Value::Array(apps.clone())),
            )
            .await?;
        text(&r["deploymentId"])
    };
    follow(c, &deployment, &ids, wait, "deployed").await
}

/// Counts of one app for the progress bar: (done, wanted).
async fn progress(c: &Client, path: &str) -> Option<(u64, u64)> {
    let a = c.get(&format!("/v2/apps{path}")).await.ok()?["app"].clone();
    let wanted = a["instances"].as_u64().unwrap_or(0);
    let checked = a["healthChecks"].as_array().is_some_and(|h| !h.is_empty());
    let config = a["versionInfo"]["lastConfigChangeAt"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let done = a["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["state"] == "TASK_RUNNING")
        .filter(|t| t["version"].as_str().unwrap_or("") >= config.as_str())
        .filter(|t| !checked || t["healthCheckResults"][0]["alive"] == true)
        .count() as u64;
    Some((done.min(wanted), wanted))
}

/// Waits for `deployment` to finish, drawing progress.
async fn follow(
    c: &Client,
    deployment: &str,
    ids: &[String],
    wait: &Wait,
    verb: &str,
) -> anyhow::Result<()> {
    if wait.detach {
        println!("deployment {deployment} started");
        return Ok(());
    }
    let bar = ProgressBar::new(1);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(ids.join(", "));
    bar.enable_steady_tick(Duration::from_millis(120));
    let started = Instant::now();
    loop {
        let deployments = c.get("/v2/deployments").await?;
        let current = deployments
            .as_array()
            .into_iter()
            .flatten()
            .find(|d| d["id"] == deployment)
            .cloned();
        let (mut done, mut wanted) = (0, 0);
        for id in ids {
            if let Some((d, w)) = progress(c, id).await {
                done += d;
                wanted += w;
            }
        }
        bar.set_length(wanted.max(1));
        bar.set_position(done);
        match current {
            None => {
                bar.finish_and_clear();
                println!(
                    "✔ {verb} {} ({done}/{wanted} running) in {:.1}s",
                    ids.join(", "),
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            Some(d) => {
                let actions: Vec<String> = d["currentActions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| format!("{} {}", text(&a["action"]), text(&a["app"])))
                    .collect();
                bar.set_message(format!(
                    "step {}/{}: {}",
                    d["currentStep"],
                    d["totalSteps"],
                    actions.join(", ")
                ));
            }
        }
        if started.elapsed() > Duration::from_secs(wait.timeout) {
            bar.abandon();
            let queue = c.get("/v2/queue").await.unwrap_or_default();
            let reasons: Vec<String> = queue["queue"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|q| {
                    q["processedOffersSummary"]["rejectSummaryLastOffers"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                })
                .map(|r| text(&r["reason"]))
                .collect();
            let hint = if reasons.is_empty() {
                String::new()
            } else {
                format!(" (offers declined: {})", reasons.join(", "))
            };
            bail!(
                "deployment {deployment} is still running after {}s (--timeout){hint}; it goes on — see `agora app show`",
                wait.timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_ids_are_checked_and_canonical() {
        assert_eq!(app_path("web/api").unwrap(), "/web/api");
        assert_eq!(app_path("//web/").unwrap(), "/web");
        assert!(app_path("Web").is_err());
        assert!(app_path("").is_err());
    }

    #[test]
    fn statuses_read_at_a_glance() {
        assert_eq!(
            status_of(&json!({"instances": 2, "tasksRunning": 2, "deployments": []})),
            "Running"
        );
        assert_eq!(
            status_of(&json!({"instances": 2, "tasksRunning": 1, "deployments": [{"id": "d"}]})),
            "Deploying"
        );
        assert_eq!(
            status_of(&json!({"instances": 2, "tasksRunning": 1, "deployments": []})),
            "Waiting"
        );
        assert_eq!(
            status_of(&json!({"instances": 0, "tasksRunning": 0})),
            "Suspended"
        );
    }
}
