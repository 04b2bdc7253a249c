//! Authentication vocabulary, as Mesos defines it: credentials files, HTTP
//! Basic headers and the realms endpoints belong to. Pure: the shells read
//! the files, hold the credentials and answer 401 (see `agora-rpc`).
//!
//! - Credentials files are Mesos' JSON: `{"credentials": [{"principal": "p",
//!   "secret": "s"}]}` (master `--credentials`, agent `--http_credentials`),
//!   or a single `{"principal": "p", "secret": "s"}` (agent `--credential`).
//!   A missing secret is the empty string; a later duplicate principal wins.
//! - Secrets are compared in constant time and never printed: [`Secret`]'s
//!   `Debug` hides it.

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use serde::Deserialize;
use subtle::ConstantTimeEq as _;

/// A secret: compared in constant time, never shown.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `s`.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself (to send it; never to log it).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `other` is this secret, in time independent of where they
    /// differ.
    pub fn matches(&self, other: &str) -> bool {
        self.0.as_bytes().ct_eq(other.as_bytes()).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// One principal and its secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    /// Who.
    pub principal: String,
    /// Their secret.
    pub secret: Secret,
}

impl Credential {
    /// The value of an `Authorization` header carrying this credential.
    pub fn basic_header(&self) -> String {
        let pair = format!("{}:{}", self.principal, self.secret.expose());
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }
}

/// What can be wrong with a credentials file.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialsError {
    /// Not JSON of the expected shape.
    #[error("not a Mesos credentials file: {0}")]
    Malformed(String),
    /// No credential at all (Mesos refuses to start on one).
    #[error("the credentials file must contain at least one credential")]
    Empty,
    /// A principal is empty or has a `:` (Basic could not carry it).
    #[error("principal '{0}' is empty or contains ':'")]
    BadPrincipal(String),
}

#[derive(Deserialize)]
struct RawCredential {
    principal: String,
    #[serde(default)]
    secret: String,
}

#[derive(Deserialize)]
struct RawCredentials {
    #[serde(default)]
    credentials: Vec<RawCredential>,
}

fn checked(raw: RawCredential) -> Result<Credential, CredentialsError> {
    if raw.principal.is_empty() || raw.principal.contains(':') {
        return Err(CredentialsError::BadPrincipal(raw.principal));
    }
    Ok(Credential {
        principal: raw.principal,
        secret: Secret(raw.secret),
    })
}

/// The principals a realm accepts, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    by_principal: HashMap<String, Secret>,
}

impl Credentials {
    /// Parses a Mesos credentials file (`{"credentials": [...]}`).
    pub fn parse(json: &[u8]) -> Result<Credentials, CredentialsError> {
        let raw: RawCredentials =
            serde_json::from_slice(json).map_err(|e| CredentialsError::Malformed(e.to_string()))?;
        if raw.credentials.is_empty() {
            return Err(CredentialsError::Empty);
        }
        let mut by_principal = HashMap::new();
        for c in raw.credentials {
            let c = checked(c)?;
            by_principal.insert(c.principal, c.secret);
        }
        Ok(Credentials { by_principal })
    }

    /// Credentials of the given principals.
    pub fn of(credentials: impl IntoIterator<Item = Credential>) -> Credentials {
        Credentials {
            by_principal: credentials
                .into_iter()
                .map(|c| (c.principal, c.secret))
                .collect(),
        }
    }

    /// The principal whose secret `secret` is, if `principal` is known.
    pub fn verify(&self, principal: &str, secret: &str) -> bool {
        self.by_principal
            .get(principal)
            .is_some_and(|s| s.matches(secret))
    }

    /// How many principals there are.
    pub fn len(&self) -> usize {
        self.by_principal.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_principal.is_empty()
    }
}

/// Parses a single-credential file (`{"principal": "p", "secret": "s"}`,
/// agent `--credential`), or a credentials file with one entry.
pub fn parse_credential(json: &[u8]) -> Result<Credential, CredentialsError> {
    if let Ok(one) = serde_json::from_slice::<RawCredential>(json) {
        return checked(one);
    }
    let raw: RawCredentials =
        serde_json::from_slice(json).map_err(|e| CredentialsError::Malformed(e.to_string()))?;
    let mut all = raw.credentials.into_iter();
    match (all.next(), all.next()) {
        (Some(c), None) => checked(c),
        (None, _) => Err(CredentialsError::Empty),
        (Some(_), Some(_)) => Err(CredentialsError::Malformed(
            "expected one credential, found several".into(),
        )),
    }
}

/// The principal and secret of an `Authorization: Basic …` header value,
/// as Mesos reads it: exactly `Basic <base64>`, the decoded text split at
/// its one `:`.
pub fn parse_basic(value: &str) -> Option<(String, String)> {
    let mut parts = value.split(' ');
    let (Some("Basic"), Some(encoded), None) = (parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    let lenient = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let decoded = lenient.decode(encoded).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let mut pair = text.split(':');
    let (Some(principal), Some(secret), None) = (pair.next(), pair.next(), pair.next()) else {
        return None;
    };
    Some((principal.to_string(), secret.to_string()))
}

/// A group of endpoints that are authenticated together (libprocess'
/// realms; the names are Mesos').
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Realm {
    /// `/api/v1/scheduler`.
    MasterScheduler,
    /// The master's read-only endpoints (`/state`, `/metrics/snapshot`, …) and UI.
    MasterReadonly,
    /// The master's operator API and other writes (`/api/v1`, `/teardown`).
    MasterReadwrite,
    /// The agent's read-only endpoints (`/state`, `/files/*`).
    AgentReadonly,
    /// The agent's operator API.
    AgentReadwrite,
    /// The agent's executor API.
    AgentExecutor,
}

impl Realm {
    /// Mesos' name, for `WWW-Authenticate: Basic realm="…"`.
    pub fn name(self) -> &'static str {
        match self {
            Realm::MasterScheduler => "mesos-master-scheduler",
            Realm::MasterReadonly => "mesos-master-readonly",
            Realm::MasterReadwrite => "mesos-master-readwrite",
            Realm::AgentReadonly => "mesos-agent-readonly",
            Realm::AgentReadwrite => "mesos-agent-readwrite",
            Realm::AgentExecutor => "mesos-agent-executor",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_files_as_mesos_reads_them() {
        let c = Credentials::parse(
            br#"{"credentials":[{"principal":"ops","secret":"s3cret"},{"principal":"fw"},
                {"principal":"ops","secret":"later"}], "unknown": 1}"#,
        )
        .unwrap();
        assert_eq!(c.len(), 2);
        assert!(c.verify("ops", "later") && !c.verify("ops", "s3cret"));
        assert!(c.verify("fw", "") && !c.verify("fw", "x"));
        assert!(!c.verify("nobody", ""));
        assert_eq!(
            Credentials::parse(br#"{"credentials":[]}"#),
            Err(CredentialsError::Empty)
        );
        assert!(matches!(
            Credentials::parse(b"principal secret"),
            Err(CredentialsError::Malformed(_))
        ));
        assert_eq!(
            Credentials::parse(br#"{"credentials":[{"principal":"a:b","secret":"x"}]}"#),
            Err(CredentialsError::BadPrincipal("a:b".into()))
        );
        let one = parse_credential(br#"{"principal":"agent","secret":"k"}"#).unwrap();
        assert_eq!(one.principal, "agent");
        assert!(one.secret.matches("k"));
        assert_eq!(format!("{:?}", one.secret), "Secret(…)");
    }

    #[test]
    fn basic_headers_as_mesos_reads_them() {
        let c = Credential {
            principal: "ops".into(),
            secret: Secret::new("pw"),
        };
        let h = c.basic_header();
        assert_eq!(parse_basic(&h), Some(("ops".into(), "pw".into())));
        // Padding is optional.
        assert_eq!(
            parse_basic("Basic b3BzOnB3"),
            Some(("ops".into(), "pw".into()))
        );
        for bad in [
            "",
            "Basic",
            "basic b3BzOnB3",
            "Basic  b3BzOnB3",
            "Bearer b3BzOnB3",
            "Basic !!!",
            // "opspw": no ':'; "a:b:c": two.
            "Basic b3BzcHc=",
            "Basic YTpiOmM=",
        ] {
            assert_eq!(parse_basic(bad), None, "{bad}");
        }
    }
}
