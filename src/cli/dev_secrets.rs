//! What `agora dev` secures itself with, made at its first start in
//! `<work-dir>/secrets/` and reused afterwards: a cluster CA, certificates
//! for the master, the agents and marathon-rs (valid for `localhost` and
//! `127.0.0.1`, the agents' also for their 127.0.0.x), a Mesos credentials file with an `admin` principal and one
//! per component (random secrets), and `cli.json`, from which `agora app`
//! finds marathon-rs, the CA and the admin's credentials without flags.
//! Every secret file is mode 0600.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use agora_proto::auth::Credential;
use agora_rpc::tls::{Role, Tls};
use agora_testbed::secrets::{CertSpec, Secrets, write_private};
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

/// The CLI's view of a dev cluster (`cli.json`).
pub fn cli_json(work_dir: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(work_dir.join("secrets").join("cli.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// The secrets in `work_dir`, made on first use; the agents' certificate
/// names the addresses of `agents` agents (127.0.0.2 onwards).
pub fn load_or_make(
    work_dir: &Path,
    master_port: u16,
    marathon_port: u16,
    agents: u16,
) -> anyhow::Result<DevSecrets> {
    let dir = work_dir.join("secrets");
    let local: Vec<String> = vec!["localhost".into(), "127.0.0.1".into()];
    let spec = |file: &str, role: Role, names: Vec<String>| CertSpec {
        file: file.into(),
        role,
        names,
    };
    let agent_names = local
        .iter()
        .cloned()
        .chain(
            (1..=agents)
                .map(super::dev::agent_ip)
                .map(|ip| ip.to_string()),
        )
        .collect();
    let secrets = Secrets::ensure(
        &dir,
        agora_rpc::tls::DEFAULT_CLUSTER,
        &[
            spec("master", Role::Master, local.clone()),
            spec("agent", Role::Agent, agent_names),
            spec("marathon", Role::Client, local),
        ],
        &["admin", "marathon", "dns", "agent"],
    )
    .with_context(|| format!("the dev cluster's secrets in {}", dir.display()))?;
    let tls = |name: &str| -> anyhow::Result<Arc<Tls>> {
        Ok(Arc::new(Tls::load(
            &secrets.cert(name),
            &secrets.key(name),
            &secrets.ca,
        )?))
    };
    let of = |principal: &str| -> anyhow::Result<Credential> {
        secrets
            .credential(principal)
            .cloned()
            .with_context(|| format!("{} has no '{principal}'", secrets.credentials.display()))
    };
    let admin = of("admin")?;
    let ca_cert = secrets.ca.clone();
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
        master: tls("master")?,
        agent: tls("agent")?,
        marathon: tls("marathon")?,
        credentials: secrets.credentials.clone(),
        admin,
        framework: of("marathon")?,
        dns: of("dns")?,
        agent_credential: of("agent")?,
        ca: ca_cert,
        dir,
    })
}
