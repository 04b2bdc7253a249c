//! Who may use marathon-rs' HTTP API: Marathon's `--http_credentials
//! user:password` (HTTP Basic on every path, `/ping`, `/v2/events` and the
//! UI included), and bearer tokens (`Authorization: Bearer <t>`, or
//! `token=<t>` as the `marathon` client's `auth_token` and marathon-lb
//! send). Secrets are compared in constant time and never shown.

use agora_proto::auth::Secret;
use base64::Engine as _;
use http::{HeaderMap, HeaderValue, StatusCode, header};

/// The API's credentials (none: open).
#[derive(Debug, Default)]
pub struct HttpAuth {
    user: Option<(String, Secret)>,
    tokens: Vec<Secret>,
    realm: String,
}

/// `user:password` split as Marathon does: at the last `:`, neither part
/// empty.
pub fn parse_user_password(s: &str) -> Result<(String, Secret), String> {
    match s.rsplit_once(':') {
        Some((user, password)) if !user.is_empty() && !password.is_empty() => {
            Ok((user.to_string(), Secret::new(password)))
        }
        _ => Err("expected user:password (neither part empty)".into()),
    }
}

impl HttpAuth {
    /// No credentials: every request is let through.
    pub fn open() -> HttpAuth {
        HttpAuth::default()
    }

    /// Basic with `user` (if any) and `tokens`, challenging in `realm`.
    pub fn new(user: Option<(String, Secret)>, tokens: Vec<Secret>, realm: &str) -> HttpAuth {
        HttpAuth {
            user,
            tokens,
            realm: realm.to_string(),
        }
    }

    /// Whether anything is required.
    pub fn is_open(&self) -> bool {
        self.user.is_none() && self.tokens.is_empty()
    }

    fn accepts(&self, value: &str) -> bool {
        if let Some(encoded) = value.strip_prefix("Basic ") {
            let Some((user, password)) = self.user.as_ref() else {
                return false;
            };
            let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim())
            else {
                return false;
            };
            let text = String::from_utf8_lossy(&decoded);
            return text
                .rsplit_once(':')
                .is_some_and(|(u, p)| u == user && password.matches(p));
        }
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("token="))
            .map(str::trim);
        token.is_some_and(|t| self.tokens.iter().any(|s| s.matches(t)))
    }

    /// None, or the 401 to answer (`WWW-Authenticate: Basic realm="…"`).
    pub fn refusal(&self, headers: &HeaderMap) -> Option<warp::reply::Response> {
        if self.is_open() {
            return None;
        }
        let ok = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| self.accepts(v));
        if ok {
            return None;
        }
        let mut r = agora_rpc::http::body(
            StatusCode::UNAUTHORIZED,
            "application/json",
            r#"{"message":"Unauthorized: valid credentials are required"}"#,
        );
        if let Ok(v) = HeaderValue::from_str(&format!("Basic realm=\"{}\"", self.realm)) {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[test]
    fn basic_and_tokens_as_marathon_clients_send_them() {
        let (user, password) = parse_user_password("admin:pa:ss").unwrap();
        assert_eq!(user, "admin:pa");
        assert!(password.matches("ss"));
        assert!(parse_user_password("nocolon").is_err());
        assert!(parse_user_password(":x").is_err());
        let auth = HttpAuth::new(
            Some(("admin".into(), Secret::new("s3cret"))),
            vec![Secret::new("tok-1")],
            "Mesosphere",
        );
        let basic = |u: &str, p: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        };
        assert!(auth.refusal(&with(&basic("admin", "s3cret"))).is_none());
        assert!(auth.refusal(&with("Bearer tok-1")).is_none());
        assert!(auth.refusal(&with("token=tok-1")).is_none());
        for bad in [
            basic("admin", "wrong"),
            basic("root", "s3cret"),
            "Bearer tok-2".into(),
        ] {
            assert!(auth.refusal(&with(&bad)).is_some(), "{bad}");
        }
        let r = auth.refusal(&HeaderMap::new()).unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            "Basic realm=\"Mesosphere\""
        );
        assert!(HttpAuth::open().refusal(&HeaderMap::new()).is_none());
    }
}
