//! What `agora dev` secures itself with, made at its first start in
//! `<work-dir>/secrets/` and reused afterwards: a cluster CA, certificates
//! for the master, the agents and marathon-rs (valid for `localhost` and
//! `127.0.0.1`), a Mesos credentials file with an `admin` principal and one
//! per component (random secrets), and `cli.json`, from which `agora app`
//! finds marathon-rs, the CA and the admin's credentials without flags.
//! Every secret file is mode 0600.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use agora_proto::auth::{Credential, Credentials, Secret};
use agora_rpc::tls::{Role, Tls, ca};
use anyhow::Context as _;
use serde_json::{Value, json};

/// The dev cluster's certificates and credentials.
pub struct DevSecrets {
    /// `<work-dir>/secrets`.
    pub dir: PathBuf,
    /// The CA certificate.
    pub ca: PathBuf,
    /// The master's certificates.
    pub master: Arc<Tls>,
    /// The agents' certificates.
    pub agent: Arc<Tls>,
    /// marathon-rs' certificates.
    pub marathon: Arc<Tls>,
    /// The credentials file (every principal).
    pub credentials: PathBuf,
    /// The operator: the UIs, `agora app`, curl.
    pub admin: Credential,
    /// marathon-rs as a framework.
    pub framework: Credential,
    /// agora dns.
    pub dns: Credential,
    /// The agents, to the master.
    pub agent_credential: Credential,
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

fn random_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The CLI's view of a dev cluster (`cli.json`).
pub fn cli_json(work_dir: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(work_dir.join("secrets").join("cli.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// The secrets in `work_dir`, made on first use.
pub fn load_or_make(
    work_dir: &Path,
    master_port: u16,
    marathon_port: u16,
) -> anyhow::Result<DevSecrets> {
    let dir = work_dir.join("secrets");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let cluster = agora_rpc::tls::DEFAULT_CLUSTER;
    let ca_cert = dir.join("ca.pem");
    let ca_key = dir.join("ca-key.pem");
    if !ca_cert.exists() || !ca_key.exists() {
        let (cert, key) = ca::init(cluster)?;
        write_private(&ca_key, &key)?;
        write_private(&ca_cert, &cert)?;
    }
    let ca_key_pem = std::fs::read_to_string(&ca_key)?;
    let names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into()];
    let issue = |name: &str, role: Role| -> anyhow::Result<Arc<Tls>> {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}-key.pem"));
        if !cert.exists() || !key.exists() {
            let (c, k) = ca::issue(cluster, &ca_key_pem, role, &names)?;
            write_private(&key, &k)?;
            write_private(&cert, &c)?;
        }
        Ok(Arc::new(Tls::load(&cert, &key, &ca_cert)?))
    };
    let master = issue("master", Role::Master)?;
    let agent = issue("agent", Role::Agent)?;
    let marathon = issue("marathon", Role::Client)?;
    let credentials = dir.join("credentials.json");
    if !credentials.exists() {
        let all: Vec<Value> = ["admin", "marathon", "dns", "agent"]
            .iter()
            .map(|p| json!({"principal": p, "secret": random_secret()}))
            .collect();
        write_private(&credentials, &json!({ "credentials": all }).to_string())?;
    }
    let text = std::fs::read_to_string(&credentials)?;
    let doc: Value = serde_json::from_str(&text).context("secrets/credentials.json")?;
    Credentials::parse(text.as_bytes()).context("secrets/credentials.json")?;
    let of = |principal: &str| -> anyhow::Result<Credential> {
        let secret = doc["credentials"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["principal"] == principal)
            .and_then(|c| c["secret"].as_str())
            .with_context(|| format!("secrets/credentials.json has no '{principal}'"))?;
        Ok(Credential {
            principal: principal.into(),
            secret: Secret::new(secret),
        })
    };
    let admin = of("admin")?;
    write_private(
        &dir.join("cli.json"),
        &json!({
            "master": format!("https://127.0.0.1:{master_port}"),
            "marathon": format!("https://127.0.0.1:{marathon_port}"),
            "ca": ca_cert.display().to_string(),
            "user": admin.principal,
            "password": admin.secret.expose(),
        })
        .to_string(),
    )?;
    // `source <work-dir>/secrets/env`: the CLI, the examples and scripts
    // find the cluster, the CA and the admin's credentials.
    write_private(
        &dir.join("env"),
        &format!(
            "export AGORA_PRINCIPAL={p}\nexport AGORA_SECRET={s}\nexport AGORA_CA_FILE={ca}\n\
             export AGORA_MARATHON=https://127.0.0.1:{marathon_port}\n\
             export AGORA_MARATHON_CREDENTIALS={p}:{s}\n",
            p = admin.principal,
            s = admin.secret.expose(),
            ca = ca_cert.display(),
        ),
    )?;
    Ok(DevSecrets {
        ca: ca_cert,
        master,
        agent,
        marathon,
        credentials,
        admin,
        framework: of("marathon")?,
        dns: of("dns")?,
        agent_credential: of("agent")?,
        dir,
    })
}
