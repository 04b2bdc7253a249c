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

/// The claims of an executor's token, as Mesos' agent signs them: the
/// framework, executor and container ids (strings, no expiry: the token
/// lives as long as the agent's key).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct ExecutorClaims {
    /// FrameworkID.
    pub fid: String,
    /// ExecutorID.
    pub eid: String,
    /// ContainerID of the executor's container.
    pub cid: String,
}

fn b64url() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

fn hs256(key: &[u8]) -> hmac::Hmac<sha2::Sha256> {
    // HMAC takes keys of any length.
    <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"))
}

/// Signs `claims` (HS256 with `key`): `MESOS_EXECUTOR_AUTHENTICATION_TOKEN`,
/// `b64url(header).b64url(claims).b64url(HMAC-SHA256)` without padding.
pub fn executor_token(key: &[u8], claims: &ExecutorClaims) -> String {
    use hmac::Mac as _;
    let header = b64url().encode(r#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = b64url().encode(serde_json::to_vec(claims).unwrap_or_default());
    let signed = format!("{header}.{payload}");
    let mut mac = hs256(key);
    mac.update(signed.as_bytes());
    let signature = b64url().encode(mac.finalize().into_bytes());
    format!("{signed}.{signature}")
}

/// The claims of `token` if `key` signed it with HS256: the header must
/// say `HS256` (so `none` is refused) and name no `crit` extension, the
/// signature is checked in constant time.
pub fn verify_executor_token(key: &[u8], token: &str) -> Result<ExecutorClaims, String> {
    use hmac::Mac as _;
    let invalid = |why: &str| format!("Invalid JWT: {why}");
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("expected three parts"));
    };
    let header: serde_json::Value = b64url()
        .decode(header)
        .ok()
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or_else(|| invalid("unreadable header"))?;
    if header["alg"] != "HS256" {
        return Err(invalid("only HS256 is accepted"));
    }
    if header.get("crit").is_some() {
        return Err(invalid("'crit' is not supported"));
    }
    let signature = b64url()
        .decode(signature)
        .map_err(|_| invalid("unreadable signature"))?;
    let signed = token.rsplit_once('.').map_or("", |(signed, _)| signed);
    let mut mac = hs256(key);
    mac.update(signed.as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| invalid("signature mismatch"))?;
    let claims = b64url()
        .decode(payload)
        .map_err(|_| invalid("unreadable payload"))?;
    serde_json::from_slice(&claims).map_err(|_| "JWT claims missing".to_string())
}

#[cfg(test)]
mod jwt_tests {
    use super::*;

    #[test]
    fn executor_tokens_verify_only_with_their_key_and_hs256() {
        let claims = ExecutorClaims {
            fid: "f".into(),
            eid: "e".into(),
            cid: "c".into(),
        };
        let token = executor_token(b"key-1", &claims);
        assert_eq!(token.split('.').count(), 3);
        assert_eq!(verify_executor_token(b"key-1", &token), Ok(claims.clone()));
        assert!(verify_executor_token(b"key-2", &token).is_err());
        // alg: none, same claims, no signature.
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s.as_bytes());
        let none = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(r#"{"fid":"f","eid":"e","cid":"c"}"#)
        );
        assert!(verify_executor_token(b"key-1", &none).is_err());
        assert!(verify_executor_token(b"key-1", "garbage").is_err());
        // A changed payload breaks the signature.
        let parts: Vec<&str> = token.split('.').collect();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64(r#"{"fid":"f","eid":"other","cid":"c"}"#),
            parts[2]
        );
        assert!(verify_executor_token(b"key-1", &forged).is_err());
    }
}
