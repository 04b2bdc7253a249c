//! TLS for every listener and client (rustls), from one cluster CA.
//!
//! Certificates name what they are for as well as where they are: a
//! master's carries the cluster-scoped name `master.<cluster>` (default
//! `master.agora`), an agent's `agent.<cluster>`, a client's
//! `client.<cluster>` (as Nomad's `server.<region>.nomad`). Agents verify the
//! master by that name, so an agent's certificate, from the same CA, cannot
//! pose as a master; the master admits an agent's gRPC session only with a
//! verified certificate carrying `agent.<cluster>`. HTTP clients verify the
//! server's certificate against the cluster CA only (no system roots) and
//! by the host they dialled. rustls speaks TLS 1.2 and 1.3 only.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The default cluster name in certificate names (`master.agora`).
pub const DEFAULT_CLUSTER: &str = "agora";

/// What a certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A master (server of the APIs and of agents' sessions).
    Master,
    /// An agent (server of the executor API, client of the master).
    Agent,
    /// Anything else that connects: marathon-rs, agora dns, the CLI.
    Client,
}

impl Role {
    /// `master`, `agent`, `client`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Agent => "agent",
            Role::Client => "client",
        }
    }

    /// The cluster-scoped DNS name certificates of this role carry.
    pub fn name(self, cluster: &str) -> String {
        format!("{}.{cluster}", self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "master" => Ok(Role::Master),
            "agent" => Ok(Role::Agent),
            "client" => Ok(Role::Client),
            _ => Err(format!("'{s}' is not a role (master, agent, client)")),
        }
    }
}

/// What can go wrong loading certificates.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no usable PEM of the expected kind.
    #[error("{what}: {why}")]
    Pem {
        /// Which file or input.
        what: String,
        /// Why.
        why: String,
    },
    /// rustls refused the combination.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The cryptography of every TLS connection Agora makes or takes: *ring*.
/// (aws-lc-rs, rustls' default, spends about 25 ms initialising in each new
/// process, the first handshake of every executor: 40 ms more per task
/// launch, measured with `agora bench security`.)
#[allow(
    deprecated,
    reason = "ring has no post-quantum key exchange; TLS 1.2/1.3 with X25519 and P-256 as before"
)]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            what: what.into(),
            why: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what: what.into(),
            why: "no certificate in it".into(),
        });
    }
    Ok(certs)
}

fn roots(ca: &[CertificateDer<'static>]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in ca {
        roots
            .add(c.clone())
            .map_err(|e| TlsError::Config(format!("CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// A client configuration trusting only the cluster CA `ca_pem`, presenting
/// `identity` (certificate chain and key) when given.
pub fn client_config(
    ca_pem: &[u8],
    identity: Option<(&[u8], &[u8])>,
) -> Result<rustls::ClientConfig, TlsError> {
    let roots = roots(&certs(ca_pem, "the CA")?)?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots);
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError::Pem {
                what: "the key".into(),
                why: e.to_string(),
            })?;
            builder
                .with_client_auth_cert(certs(cert, "the certificate")?, key)
                .map_err(|e| TlsError::Config(e.to_string()))
        }
    }
}

/// An HTTP client builder for `http://` URLs, which trusts no certificate
/// (an `https://` request through it fails). reqwest's default TLS reads and
/// parses every root certificate of the system when a client is built: a
/// tenth of the CPU of an executor, which lives for one task and speaks
/// plain HTTP to its agent.
pub fn plain_reqwest() -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder();
    match rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
    {
        Ok(b) => builder.tls_backend_preconfigured(
            b.with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        ),
        Err(_) => builder,
    }
}

/// An HTTP client builder trusting only the cluster CA (and presenting
/// `identity`), for `https://` URLs.
pub fn reqwest_client(
    ca_pem: &[u8],
    identity: Option<(&[u8], &[u8])>,
) -> Result<reqwest::ClientBuilder, TlsError> {
    let config = client_config(ca_pem, identity)?;
    Ok(reqwest::Client::builder().tls_backend_preconfigured(config))
}

/// What a client needs to speak TLS to the cluster: the CA, and a
/// certificate of its own when it has one.
#[derive(Clone, Default)]
pub struct ClientTls {
    /// The cluster CA, PEM.
    pub ca_pem: Vec<u8>,
    /// Its certificate chain and key, PEM.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls(…)")
    }
}

impl ClientTls {
    /// Reads the CA (and the certificate and key, when given).
    pub fn load(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<ClientTls, TlsError> {
        Ok(ClientTls {
            ca_pem: read(ca)?,
            identity: match identity {
                Some((cert, key)) => Some((read(cert)?, read(key)?)),
                None => None,
            },
        })
    }

    /// An HTTP client builder speaking TLS with it.
    pub fn reqwest(&self) -> Result<reqwest::ClientBuilder, TlsError> {
        let identity = self
            .identity
            .as_ref()
            .map(|(c, k)| (c.as_slice(), k.as_slice()));
        reqwest_client(&self.ca_pem, identity)
    }
}

/// `https://host:port` when `tls`, else `http://host:port`, for a
/// `host:port` (or a URL, left as it is).
pub fn base_url(address: &str, tls: bool) -> String {
    let a = address.trim().trim_end_matches('/');
    if a.starts_with("http://") || a.starts_with("https://") {
        a.to_string()
    } else if tls {
        format!("https://{a}")
    } else {
        format!("http://{a}")
    }
}

/// A node's certificates: its own (chain and key) and the cluster CA.
#[derive(Clone)]
pub struct Tls {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    ca_pem: Vec<u8>,
    server: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls(…)")
    }
}

impl Tls {
    /// Reads `cert` (PEM chain), `key` (PEM) and `ca` (PEM).
    pub fn load(cert: &Path, key: &Path, ca: &Path) -> Result<Tls, TlsError> {
        Tls::from_pem(read(cert)?, read(key)?, read(ca)?)
    }

    /// The same from PEM bytes.
    pub fn from_pem(cert_pem: Vec<u8>, key_pem: Vec<u8>, ca_pem: Vec<u8>) -> Result<Tls, TlsError> {
        let chain = certs(&cert_pem, "the certificate")?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
            what: "the key".into(),
            why: e.to_string(),
        })?;
        let roots = Arc::new(roots(&certs(&ca_pem, "the CA")?)?);
        // Client certificates are checked when presented and optional at
        // the TLS level: HTTP clients need none; agents' gRPC sessions are
        // refused without one (see `peer_roles`).
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            cert_pem,
            key_pem,
            ca_pem,
            server: Arc::new(server),
        })
    }

    /// The acceptor for listeners.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.server.clone())
    }

    /// The cluster CA, PEM.
    pub fn ca_pem(&self) -> &[u8] {
        &self.ca_pem
    }

    /// This node's certificates as a client's.
    pub fn client(&self) -> ClientTls {
        ClientTls {
            ca_pem: self.ca_pem.clone(),
            identity: Some((self.cert_pem.clone(), self.key_pem.clone())),
        }
    }

    /// An HTTP client that trusts the cluster CA and presents this node's
    /// certificate.
    pub fn reqwest(&self) -> Result<reqwest::ClientBuilder, TlsError> {
        reqwest_client(&self.ca_pem, Some((&self.cert_pem, &self.key_pem)))
    }

    /// The gRPC client configuration: the cluster CA, this node's
    /// certificate, and the name the server must carry (`master.agora`).
    pub fn tonic(&self, server_name: &str) -> tonic::transport::ClientTlsConfig {
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca_pem))
            .identity(tonic::transport::Identity::from_pem(
                &self.cert_pem,
                &self.key_pem,
            ))
            .domain_name(server_name)
    }
}

/// Whether a (verified) peer certificate carries `role`'s cluster-scoped
/// name in `cluster`.
pub fn has_role(cert: &CertificateDer<'_>, role: Role, cluster: &str) -> bool {
    let Ok(name) = rustls_pki_types::ServerName::try_from(role.name(cluster)) else {
        return false;
    };
    webpki::EndEntityCert::try_from(cert)
        .is_ok_and(|c| c.verify_is_valid_for_subject_name(&name).is_ok())
}

/// A cluster CA and the certificates it issues (`agora ca`), with rcgen.
pub mod ca {
    use std::net::IpAddr;

    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
        IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
    };

    use super::{Role, TlsError};

    fn err(e: rcgen::Error) -> TlsError {
        TlsError::Config(e.to_string())
    }

    /// The CA's parameters: the same for `init` and for every `issue`, so
    /// that issuing rebuilds the issuer from the CA key alone.
    fn ca_params(cluster: &str) -> CertificateParams {
        let mut p = CertificateParams::default();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Agora");
        dn.push(DnType::CommonName, format!("Agora cluster CA ({cluster})"));
        p.distinguished_name = dn;
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        p.not_before = rcgen::date_time_ymd(2024, 1, 1);
        p.not_after = rcgen::date_time_ymd(2124, 1, 1);
        p
    }

    /// A new CA for `cluster`: (certificate PEM, key PEM).
    pub fn init(cluster: &str) -> Result<(String, String), TlsError> {
        let key = KeyPair::generate().map_err(err)?;
        let cert = ca_params(cluster).self_signed(&key).map_err(err)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// A certificate for `role`, signed by the CA of `cluster` whose key is
    /// `ca_key_pem`: its names are the role's cluster-scoped name and
    /// `names` (DNS names or IP addresses). Returns (certificate PEM, key PEM).
    pub fn issue(
        cluster: &str,
        ca_key_pem: &str,
        role: Role,
        names: &[String],
    ) -> Result<(String, String), TlsError> {
        let ca_key = KeyPair::from_pem(ca_key_pem).map_err(err)?;
        let issuer = Issuer::new(ca_params(cluster), ca_key);
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Agora");
        dn.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_else(|| role.name(cluster)),
        );
        p.distinguished_name = dn;
        let mut sans = vec![SanType::DnsName(
            role.name(cluster).try_into().map_err(err)?,
        )];
        for n in names {
            sans.push(match n.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(n.clone().try_into().map_err(err)?),
            });
        }
        p.subject_alt_names = sans;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.not_before = rcgen::date_time_ymd(2024, 1, 1);
        p.not_after = rcgen::date_time_ymd(2044, 1, 1);
        p.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(err)?;
        let cert = p.signed_by(&key, &issuer).map_err(err)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_carry_their_role_and_chain_to_the_ca() {
        let (ca, ca_key) = ca::init("test").unwrap();
        let (cert, key) = ca::issue(
            "test",
            &ca_key,
            Role::Agent,
            &["a1.example".into(), "10.0.0.7".into()],
        )
        .unwrap();
        let tls = Tls::from_pem(
            cert.clone().into_bytes(),
            key.into_bytes(),
            ca.clone().into_bytes(),
        )
        .unwrap();
        let der = certs(cert.as_bytes(), "cert").unwrap().remove(0);
        assert!(has_role(&der, Role::Agent, "test"));
        assert!(!has_role(&der, Role::Master, "test"));
        assert!(!has_role(&der, Role::Agent, "agora"));
        // A client trusting the CA accepts it (the chain is checked in the
        // end-to-end tests over real connections).
        assert!(client_config(ca.as_bytes(), None).is_ok());
        assert!(tls.reqwest().is_ok());
        // Garbage is an error naming the input.
        let e = Tls::from_pem(b"nope".to_vec(), b"nope".to_vec(), ca.into_bytes()).unwrap_err();
        assert!(e.to_string().contains("certificate"), "{e}");
    }
}
