//! What a cluster secures itself with, in one directory: a CA
//! (`ca.pem`, `ca-key.pem`), a certificate and key per component
//! (`<name>.pem`, `<name>-key.pem`) valid for the names given, and a Mesos
//! credentials file (`credentials.json`) with a random secret per
//! principal. Files that exist are kept, so a restarted cluster keeps its
//! secrets; every secret file is mode 0600. `agora dev` and the multi-host
//! cluster both make theirs here.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use agora_proto::auth::{Credential, Credentials, Secret};
use agora_rpc::tls::{Role, ca};
use serde_json::{Value, json};

/// What can go wrong making or reading the secrets.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A certificate could not be made.
    #[error("{0}")]
    Tls(#[from] agora_rpc::tls::TlsError),
    /// `credentials.json` is not a Mesos credentials file, or lacks a principal.
    #[error("{path}: {message}")]
    Credentials {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// A certificate to make: its file name, role and names.
pub struct CertSpec {
    /// `<file>.pem` and `<file>-key.pem`.
    pub file: String,
    /// What it is for.
    pub role: Role,
    /// DNS names and IP addresses it is valid for (beside the role's
    /// cluster-scoped name).
    pub names: Vec<String>,
}

/// The secrets directory, made or read.
pub struct Secrets {
    /// The directory.
    pub dir: PathBuf,
    /// The CA certificate.
    pub ca: PathBuf,
    /// The credentials file (every principal).
    pub credentials: PathBuf,
    principals: Vec<Credential>,
}

/// Writes `text` to `path`, readable by its owner only.
pub fn write_private(path: &Path, text: &str) -> Result<(), SecretsError> {
    let io = |source| SecretsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)
}

fn read(path: &Path) -> Result<String, SecretsError> {
    std::fs::read_to_string(path).map_err(|source| SecretsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn random_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

impl Secrets {
    /// The secrets in `dir` for `cluster`: the CA, `certs` and a credential
    /// for each of `principals`, each made when missing.
    pub fn ensure(
        dir: &Path,
        cluster: &str,
        certs: &[CertSpec],
        principals: &[&str],
    ) -> Result<Secrets, SecretsError> {
        std::fs::create_dir_all(dir).map_err(|source| SecretsError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let ca_cert = dir.join("ca.pem");
        let ca_key = dir.join("ca-key.pem");
        if !ca_cert.exists() || !ca_key.exists() {
            let (cert, key) = ca::init(cluster)?;
            write_private(&ca_key, &key)?;
            write_private(&ca_cert, &cert)?;
        }
        let ca_key_pem = read(&ca_key)?;
        for spec in certs {
            let cert = dir.join(format!("{}.pem", spec.file));
            let key = dir.join(format!("{}-key.pem", spec.file));
            // A certificate is issued again when the names it must carry
            // changed (more agents, other addresses); the CA stays.
            let names_file = dir.join(format!("{}.names", spec.file));
            let names = spec.names.join("\n");
            let same_names = std::fs::read_to_string(&names_file).is_ok_and(|n| n == names);
            if !cert.exists() || !key.exists() || !same_names {
                let (c, k) = ca::issue(cluster, &ca_key_pem, spec.role, &spec.names)?;
                write_private(&key, &k)?;
                write_private(&cert, &c)?;
                write_private(&names_file, &names)?;
            }
        }
        let credentials = dir.join("credentials.json");
        if !credentials.exists() {
            let all: Vec<Value> = principals
                .iter()
                .map(|p| json!({"principal": p, "secret": random_secret()}))
                .collect();
            write_private(&credentials, &json!({ "credentials": all }).to_string())?;
        }
        let text = read(&credentials)?;
        let bad = |message: String| SecretsError::Credentials {
            path: credentials.clone(),
            message,
        };
        Credentials::parse(text.as_bytes()).map_err(|e| bad(e.to_string()))?;
        let doc: Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let mut found = Vec::new();
        for principal in principals {
            let secret = doc["credentials"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["principal"] == *principal)
                .and_then(|c| c["secret"].as_str())
                .ok_or_else(|| bad(format!("no principal '{principal}'")))?;
            found.push(Credential {
                principal: principal.to_string(),
                secret: Secret::new(secret),
            });
        }
        Ok(Secrets {
            dir: dir.to_path_buf(),
            ca: ca_cert,
            credentials,
            principals: found,
        })
    }

    /// The credential of `principal` (one of those given to [`Secrets::ensure`]).
    pub fn credential(&self, principal: &str) -> Option<&Credential> {
        self.principals.iter().find(|c| c.principal == principal)
    }

    /// `<name>.pem`.
    pub fn cert(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pem"))
    }

    /// `<name>-key.pem`.
    pub fn key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}-key.pem"))
    }

    /// The `--ssl-*` flags of a daemon using the certificate `name`.
    pub fn ssl_flags(&self, name: &str) -> Vec<String> {
        vec![
            "--ssl-cert-file".into(),
            self.cert(name).display().to_string(),
            "--ssl-key-file".into(),
            self.key(name).display().to_string(),
            "--ssl-ca-file".into(),
            self.ca.display().to_string(),
        ]
    }

    /// Writes `{"principal": …, "secret": …}` of `principal` to
    /// `<principal>-credential.json` (the agents' and agora dns'
    /// `--credential`) and returns its path.
    pub fn credential_file(&self, principal: &str) -> Result<PathBuf, SecretsError> {
        let c = self.known(principal)?;
        let path = self.dir.join(format!("{principal}-credential.json"));
        write_private(
            &path,
            &json!({"principal": c.principal, "secret": c.secret.expose()}).to_string(),
        )?;
        Ok(path)
    }

    /// Writes the secret of `principal` alone to `<principal>-secret`
    /// (marathon-rs' `--mesos-authentication-secret-file`).
    pub fn secret_file(&self, principal: &str) -> Result<PathBuf, SecretsError> {
        let c = self.known(principal)?;
        let path = self.dir.join(format!("{principal}-secret"));
        write_private(&path, c.secret.expose())?;
        Ok(path)
    }

    /// Writes `principal:secret` to `<principal>-basic` (agora lb's
    /// `--marathon-auth-credential-file`).
    pub fn basic_file(&self, principal: &str) -> Result<PathBuf, SecretsError> {
        let c = self.known(principal)?;
        let path = self.dir.join(format!("{principal}-basic"));
        write_private(&path, &format!("{}:{}\n", c.principal, c.secret.expose()))?;
        Ok(path)
    }

    fn known(&self, principal: &str) -> Result<&Credential, SecretsError> {
        self.credential(principal)
            .ok_or_else(|| SecretsError::Credentials {
                path: self.credentials.clone(),
                message: format!("no principal '{principal}'"),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_then_kept() {
        let dir = std::env::temp_dir().join(format!("agora-secrets-{}", uuid::Uuid::new_v4()));
        let certs = [CertSpec {
            file: "master".into(),
            role: Role::Master,
            names: vec!["master1".into(), "10.77.0.11".into()],
        }];
        let first = Secrets::ensure(&dir, "agora", &certs, &["admin", "agent"]).unwrap();
        let cert = std::fs::read_to_string(first.cert("master")).unwrap();
        let admin = first
            .credential("admin")
            .unwrap()
            .secret
            .expose()
            .to_string();
        assert_eq!(admin.len(), 64);
        let again = Secrets::ensure(&dir, "agora", &certs, &["admin", "agent"]).unwrap();
        assert_eq!(std::fs::read_to_string(again.cert("master")).unwrap(), cert);
        assert_eq!(again.credential("admin").unwrap().secret.expose(), admin);
        assert!(
            Secrets::ensure(&dir, "agora", &certs, &["dns"]).is_err(),
            "a principal missing from an existing file is an error"
        );
        let file = again.credential_file("agent").unwrap();
        let parsed = agora_proto::auth::parse_credential(&std::fs::read(file).unwrap()).unwrap();
        assert_eq!(parsed.principal, "agent");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
