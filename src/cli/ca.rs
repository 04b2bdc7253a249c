//! `agora ca`: a cluster CA and its certificates, so that an admin needs
//! no openssl recipe. `init` writes `ca.pem` and `ca-key.pem` (0600) in
//! `--dir`; `issue --role master|agent|client NAME…` writes `NAME.pem` and
//! `NAME-key.pem` (0600), valid for the role's cluster-scoped name
//! (`master.<cluster>`) and the names and addresses given.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use agora_rpc::tls::{Role, ca};
use anyhow::Context as _;
use clap::{Args, Subcommand};

/// `agora ca`.
#[derive(Args, Debug, Clone)]
pub struct CaArgs {
    /// Where the CA and the certificates are kept.
    #[arg(long, default_value = "agora-ca", global = true)]
    dir: PathBuf,
    /// The cluster name in certificate names (`master.<cluster>`).
    #[arg(long, default_value = agora_rpc::tls::DEFAULT_CLUSTER, global = true)]
    cluster: String,
    #[command(subcommand)]
    command: CaCommand,
}

#[derive(Subcommand, Debug, Clone)]
enum CaCommand {
    /// Make a new CA (refuses to replace one).
    Init,
    /// Issue a certificate signed by the CA.
    Issue {
        /// What it is for: master, agent or client.
        #[arg(long)]
        role: Role,
        /// The file name (and first name); more DNS names or IP addresses
        /// the certificate is valid for may follow.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

fn write_private(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {} (it may exist already)", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

pub fn run(args: CaArgs) -> anyhow::Result<()> {
    let ca_cert = args.dir.join("ca.pem");
    let ca_key = args.dir.join("ca-key.pem");
    match args.command {
        CaCommand::Init => {
            std::fs::create_dir_all(&args.dir)
                .with_context(|| format!("cannot create {}", args.dir.display()))?;
            let (cert, key) = ca::init(&args.cluster)?;
            write_private(&ca_key, &key, 0o600)?;
            write_private(&ca_cert, &cert, 0o644)?;
            println!(
                "CA for cluster '{}' in {}: ca.pem (give it to every node and client), ca-key.pem (keep it secret)",
                args.cluster,
                args.dir.display()
            );
        }
        CaCommand::Issue { role, names } => {
            let key = std::fs::read_to_string(&ca_key).with_context(|| {
                format!(
                    "cannot read {} (run `agora ca init` first)",
                    ca_key.display()
                )
            })?;
            let file = &names[0];
            if file.is_empty() || file.contains(['/', '\0']) || file.starts_with('.') {
                anyhow::bail!("'{file}' cannot be a file name");
            }
            let (cert, cert_key) = ca::issue(&args.cluster, &key, role, &names)?;
            let cert_path = args.dir.join(format!("{file}.pem"));
            write_private(&args.dir.join(format!("{file}-key.pem")), &cert_key, 0o600)?;
            write_private(&cert_path, &cert, 0o644)?;
            println!(
                "{} certificate for {} and {}: {} and {file}-key.pem",
                role.as_str(),
                role.name(&args.cluster),
                names.join(", "),
                cert_path.display()
            );
        }
    }
    Ok(())
}
