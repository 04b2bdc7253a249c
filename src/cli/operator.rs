//! The admin commands' way to the cluster: the master's operator API
//! (`POST /api/v1`, JSON) and the agents' HTTP APIs, with the operator's
//! credentials and the cluster CA, found without flags for an `agora dev`
//! cluster on this machine.

use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

/// How the admin commands reach the cluster.
#[derive(clap::Args, Debug, Clone)]
pub struct OperatorArgs {
    /// The master's URL (a standby redirects to the leader).
    /// Default: the `agora dev` cluster in AGORA_WORK_DIR (/tmp/agora-dev),
    /// with its CA and admin credentials, else `http://localhost:5050`.
    #[arg(long = "master", env = "AGORA_MASTER_URL")]
    pub master: Option<String>,
    /// Where `agora dev` keeps its state (its `secrets/cli.json` is read
    /// when --master is not given).
    #[arg(long, env = "AGORA_WORK_DIR", default_value = "/tmp/agora-dev")]
    pub work_dir: std::path::PathBuf,
    /// The operator's principal (HTTP Basic, as in the master's --credentials).
    #[arg(long, env = "AGORA_PRINCIPAL", requires = "secret")]
    pub principal: Option<String>,
    /// The principal's secret.
    #[arg(long, env = "AGORA_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// The cluster CA, for an `https://` master and agents.
    #[arg(long, env = "AGORA_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// A client of the master's operator API and of the agents.
pub struct Operator {
    base: String,
    http: reqwest::Client,
    /// `--json`.
    pub json: bool,
}

impl Operator {
    /// The client `args` name: `--master` and its credentials, else the dev
    /// cluster on this machine, else localhost:5050.
    pub fn new(args: &OperatorArgs) -> anyhow::Result<Operator> {
        let mut args = args.clone();
        if args.master.is_none()
            && let Some(dev) = super::dev_secrets::cli_json(&args.work_dir)
        {
            let s = |k: &str| dev[k].as_str().map(str::to_string);
            args.master = s("master");
            args.ca_file = args.ca_file.or_else(|| s("ca").map(Into::into));
            if args.principal.is_none() {
                args.principal = s("user");
                args.secret = s("password");
            }
        }
        let base = super::base_url(
            args.master.as_deref().unwrap_or("http://localhost:5050"),
            "--master",
        )?;
        let credentials = args.principal.zip(args.secret);
        let http = super::marathon_client(credentials.as_ref(), args.ca_file.as_deref())?
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Operator {
            base,
            http,
            json: args.json,
        })
    }

    /// One operator call (`{"type": …}`); its answer (null for 202).
    pub async fn call(&self, call: &Value) -> anyhow::Result<Value> {
        let url = format!("{}/api/v1", self.base);
        let what = call["type"].as_str().unwrap_or("call").to_string();
        let resp = self
            .http
            .post(&url)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json")
            .body(call.to_string())
            .send()
            .await
            .with_context(|| format!("cannot reach the master at {} (--master)", self.base))?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            let hint = match status.as_u16() {
                401 => " (--principal/--secret, or AGORA_PRINCIPAL/AGORA_SECRET)",
                403 => " (the master's ACLs refuse this principal)",
                _ => "",
            };
            bail!("{what}: {} {}{hint}", status.as_u16(), body.trim());
        }
        if body.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&body)
            .with_context(|| format!("{what}: the master's answer is not JSON"))
    }

    /// A call of `kind` without arguments, e.g. `GET_AGENTS`: the answer's
    /// `get_agents` object.
    pub async fn get(&self, kind: &str) -> anyhow::Result<Value> {
        let v = self.call(&json!({ "type": kind })).await?;
        Ok(v[kind.to_ascii_lowercase()].clone())
    }

    /// GET `path` on an agent at `address` (`host:port`), with the
    /// master's scheme, CA and credentials.
    pub async fn agent_get(&self, address: &str, path: &str) -> anyhow::Result<Value> {
        let scheme = if self.base.starts_with("https://") {
            "https"
        } else {
            "http"
        };
        let url = format!("{scheme}://{address}{path}");
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("cannot reach the agent at {address}"))?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("{url}: {} {}", status.as_u16(), body.trim());
        }
        serde_json::from_str(&body).with_context(|| format!("{url}: the answer is not JSON"))
    }

    /// Prints `v` as JSON (for `--json`).
    pub fn print_json(&self, v: &Value) {
        println!(
            "{}",
            serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
        );
    }
}

/// `{"value": "x"}` → "x".
pub fn id(v: &Value) -> String {
    super::text(&v["value"])
}

/// Scalar `name` in a list of resources (0 when absent).
pub fn scalar(resources: &Value, name: &str) -> f64 {
    resources
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["name"] == name)
        .filter_map(|r| r["scalar"]["value"].as_f64())
        .fold(0.0, |a, b| a + b)
}

/// A Mesos TimeInfo (`{"nanoseconds": n}`) as a UTC time.
pub fn time(v: &Value) -> String {
    let Some(nanos) = v["nanoseconds"]
        .as_i64()
        .or_else(|| v["nanoseconds"].as_str().and_then(|s| s.parse().ok()))
    else {
        return String::new();
    };
    chrono::DateTime::from_timestamp_nanos(nanos)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// Leading `TASK_` and the like off an enum name.
pub fn short_state(v: &Value) -> String {
    let s = super::text(v);
    s.strip_prefix("TASK_").unwrap_or(&s).to_string()
}
