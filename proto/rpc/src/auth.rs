//! HTTP authentication for the master's and the agent's endpoints: which
//! realms require credentials, the credentials (re-read from their file on
//! SIGHUP), and Mesos' 401 answer. The parsing is `agora_proto::auth`'s.
//!
//! A realm that is not required lets every request through with no
//! principal, as libprocess does; a required one has no "optional" mode.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use agora_proto::auth::{Credentials, CredentialsError, Realm, parse_basic};
use http::{HeaderMap, StatusCode, header};
use tracing::{info, warn};

use crate::http::HttpError;

/// Why credentials could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a credentials file.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: CredentialsError,
    },
}

/// Reads a Mesos credentials file (`/p` or `file:///p`).
pub fn read_credentials(path: &Path) -> Result<Credentials, AuthError> {
    let path = strip_file_scheme(path);
    let bytes = std::fs::read(&path).map_err(|source| AuthError::Read {
        path: path.clone(),
        source,
    })?;
    warn_if_world_readable(&path);
    Credentials::parse(&bytes).map_err(|source| AuthError::Parse { path, source })
}

/// `file:///p` → `/p`, as Mesos' path flags accept.
pub fn strip_file_scheme(path: &Path) -> PathBuf {
    path.to_str()
        .and_then(|p| p.strip_prefix("file://"))
        .map_or_else(|| path.to_path_buf(), PathBuf::from)
}

fn warn_if_world_readable(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o004 != 0
    {
        warn!(path = %path.display(), "the credentials file is readable by every user");
    }
}

/// Which realms require credentials, and the credentials.
pub struct HttpAuth {
    required: BTreeSet<Realm>,
    /// Replaced whole on reload; read by every request (never held across
    /// an await).
    credentials: RwLock<Arc<Credentials>>,
    /// Where they were read from, for SIGHUP.
    source: Option<PathBuf>,
}

impl Default for HttpAuth {
    fn default() -> HttpAuth {
        HttpAuth::open()
    }
}

impl std::fmt::Debug for HttpAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpAuth")
            .field("required", &self.required)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl HttpAuth {
    /// No realm requires credentials (everything is open).
    pub fn open() -> HttpAuth {
        HttpAuth {
            required: BTreeSet::new(),
            credentials: RwLock::new(Arc::new(Credentials::default())),
            source: None,
        }
    }

    /// `required` realms checked against `credentials`.
    pub fn new(required: impl IntoIterator<Item = Realm>, credentials: Credentials) -> HttpAuth {
        HttpAuth {
            required: required.into_iter().collect(),
            credentials: RwLock::new(Arc::new(credentials)),
            source: None,
        }
    }

    /// `required` realms checked against the credentials in `path`, which
    /// [`Self::reload`] reads again.
    pub fn from_file(
        required: impl IntoIterator<Item = Realm>,
        path: &Path,
    ) -> Result<HttpAuth, AuthError> {
        let mut auth = HttpAuth::new(required, read_credentials(path)?);
        auth.source = Some(strip_file_scheme(path));
        Ok(auth)
    }

    /// Whether `realm` requires credentials.
    pub fn requires(&self, realm: Realm) -> bool {
        self.required.contains(&realm)
    }

    /// Reads the credentials file again (SIGHUP). A file that cannot be
    /// read or parsed leaves the old credentials in place.
    pub fn reload(&self) -> Result<(), AuthError> {
        let Some(path) = &self.source else {
            return Ok(());
        };
        let fresh = read_credentials(path)?;
        let n = fresh.len();
        *self.credentials.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
        info!(path = %path.display(), principals = n, "credentials reloaded");
        Ok(())
    }

    /// The principal whose credentials an `Authorization: Basic …` value
    /// carries, whatever the realms (agents authenticating over gRPC).
    pub fn principal_of(&self, authorization: Option<&str>) -> Option<String> {
        let (principal, secret) = parse_basic(authorization?)?;
        let credentials = self
            .credentials
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        credentials.verify(&principal, &secret).then_some(principal)
    }

    /// The authenticated principal of a request in `realm`: None when the
    /// realm is open, a 401 naming the realm when the credentials are
    /// missing or wrong.
    pub fn authenticate(
        &self,
        realm: Realm,
        headers: &HeaderMap,
    ) -> Result<Option<String>, HttpError> {
        if !self.requires(realm) {
            return Ok(None);
        }
        let pair = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_basic);
        let credentials = self
            .credentials
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match pair {
            Some((principal, secret)) if credentials.verify(&principal, &secret) => {
                Ok(Some(principal))
            }
            _ => Err(unauthorized(realm)),
        }
    }
}

/// Mesos' 401: `WWW-Authenticate: Basic realm="<realm>"`, body
/// `401 Unauthorized.`.
pub fn unauthorized(realm: Realm) -> HttpError {
    HttpError::new(StatusCode::UNAUTHORIZED, "401 Unauthorized.")
        .with_challenge(format!("Basic realm=\"{}\"", realm.name()))
}

/// Re-reads `auth`'s credentials file on every SIGHUP, for as long as the
/// process runs.
pub fn reload_on_sighup(auth: Arc<HttpAuth>) {
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            warn!("cannot listen for SIGHUP; credentials will not be reloaded");
            return;
        };
        while hup.recv().await.is_some() {
            if let Err(e) = auth.reload() {
                warn!(error = %e, "cannot reload the credentials; keeping the old ones");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_proto::auth::{Credential, Secret};

    #[test]
    fn required_realms_answer_401_with_the_realm() {
        let auth = HttpAuth::new(
            [Realm::MasterReadwrite],
            Credentials::of([Credential {
                principal: "ops".into(),
                secret: Secret::new("pw"),
            }]),
        );
        let mut h = HeaderMap::new();
        assert_eq!(auth.authenticate(Realm::MasterReadonly, &h), Ok(None));
        let e = auth.authenticate(Realm::MasterReadwrite, &h).unwrap_err();
        assert_eq!(e.status, 401);
        let r = e.into_response();
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            "Basic realm=\"mesos-master-readwrite\""
        );
        h.insert(header::AUTHORIZATION, "Basic b3BzOnB3".parse().unwrap());
        assert_eq!(
            auth.authenticate(Realm::MasterReadwrite, &h),
            Ok(Some("ops".into()))
        );
        h.insert(header::AUTHORIZATION, "Basic b3BzOnB4".parse().unwrap());
        assert!(auth.authenticate(Realm::MasterReadwrite, &h).is_err());
    }

    #[test]
    fn reload_replaces_the_credentials_and_keeps_them_on_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials.json");
        std::fs::write(&path, r#"{"credentials":[{"principal":"a","secret":"1"}]}"#).unwrap();
        let auth = HttpAuth::from_file([Realm::MasterScheduler], &path).unwrap();
        let with = |p: &str| {
            let mut h = HeaderMap::new();
            let c = Credential {
                principal: p.into(),
                secret: Secret::new(if p == "a" { "1" } else { "2" }),
            };
            h.insert(header::AUTHORIZATION, c.basic_header().parse().unwrap());
            auth.authenticate(Realm::MasterScheduler, &h).is_ok()
        };
        assert!(with("a") && !with("b"));
        std::fs::write(&path, r#"{"credentials":[{"principal":"b","secret":"2"}]}"#).unwrap();
        auth.reload().unwrap();
        assert!(!with("a") && with("b"));
        std::fs::write(&path, "not json").unwrap();
        assert!(auth.reload().is_err());
        assert!(with("b"));
    }
}
