//! Health checks run by the command executor, with Mesos' semantics.
//!
//! A check (COMMAND, HTTP or TCP) starts `delay_seconds` after the task
//! starts and runs every `interval_seconds`, each attempt limited to
//! `timeout_seconds`. Failures before the first success are ignored during
//! `grace_period_seconds`. The first success, and every success after a
//! failure, is reported (TASK_RUNNING with `healthy: true`); every counted
//! failure is reported (`healthy: false`). After `consecutive_failures`
//! failures in a row the task is killed.

use std::path::Path;
use std::time::{Duration, Instant};

use agora_proto::v1::{self, health_check::Type};

use crate::sandbox;

fn secs(v: Option<f64>, default: f64) -> Duration {
    Duration::try_from_secs_f64(v.unwrap_or(default).max(0.0)).unwrap_or(Duration::ZERO)
}

/// What to do after a check result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to report.
    Quiet,
    /// Report this health (with a failure's cause).
    Report {
        /// The health.
        healthy: bool,
        /// Why it failed.
        cause: Option<String>,
    },
    /// Report unhealthy, then kill the task.
    Kill {
        /// Why.
        cause: String,
    },
}

/// The schedule and counters of one task's check.
#[derive(Debug)]
pub struct Checker {
    /// The check.
    pub spec: v1::HealthCheck,
    started: Instant,
    next: Instant,
    interval: Duration,
    grace: Duration,
    max_failures: u32,
    failures: u32,
    healthy: Option<bool>,
    in_flight: bool,
}

impl Checker {
    /// A checker for a task that started at `started`.
    pub fn new(spec: v1::HealthCheck, started: Instant) -> Checker {
        Checker {
            next: started + secs(spec.delay_seconds, 15.0),
            interval: secs(spec.interval_seconds, 10.0).max(Duration::from_millis(100)),
            grace: secs(spec.grace_period_seconds, 10.0),
            max_failures: spec.consecutive_failures.unwrap_or(3),
            started,
            spec,
            failures: 0,
            healthy: None,
            in_flight: false,
        }
    }

    /// When the next check is due (None while one is in flight: its result
    /// wakes the executor).
    pub fn next_due(&self) -> Option<Instant> {
        (!self.in_flight).then_some(self.next)
    }

    /// Whether a check should start now (then it is marked in flight).
    pub fn due(&mut self, now: Instant) -> bool {
        if self.in_flight || now < self.next {
            return false;
        }
        self.in_flight = true;
        self.next = now + self.interval;
        true
    }

    /// The timeout of one attempt.
    pub fn timeout(&self) -> Duration {
        secs(self.spec.timeout_seconds, 20.0).max(Duration::from_millis(100))
    }

    /// Takes a result in.
    pub fn result(&mut self, now: Instant, outcome: Result<(), String>) -> Verdict {
        self.in_flight = false;
        match outcome {
            Ok(()) => {
                self.failures = 0;
                let changed = self.healthy != Some(true);
                self.healthy = Some(true);
                if changed {
                    Verdict::Report {
                        healthy: true,
                        cause: None,
                    }
                } else {
                    Verdict::Quiet
                }
            }
            Err(cause) => {
                if self.healthy.is_none() && now < self.started + self.grace {
                    return Verdict::Quiet;
                }
                self.failures += 1;
                self.healthy = Some(false);
                if self.max_failures > 0 && self.failures >= self.max_failures {
                    Verdict::Kill {
                        cause: format!(
                            "{cause} ({} consecutive failed health checks)",
                            self.failures
                        ),
                    }
                } else {
                    Verdict::Report {
                        healthy: false,
                        cause: Some(cause),
                    }
                }
            }
        }
    }
}

/// Runs one attempt of `spec` for a task in `dir` with `env`.
pub async fn probe(
    spec: &v1::HealthCheck,
    env: &[(String, String)],
    dir: &Path,
    timeout: Duration,
    user: Option<&crate::users::TaskUser>,
) -> Result<(), String> {
    match tokio::time::timeout(timeout, attempt(spec, env, dir, user)).await {
        Ok(r) => r,
        Err(_) => Err(format!("health check timed out after {timeout:?}")),
    }
}

async fn attempt(
    spec: &v1::HealthCheck,
    env: &[(String, String)],
    dir: &Path,
    user: Option<&crate::users::TaskUser>,
) -> Result<(), String> {
    match spec.r#type() {
        Type::Command => {
            let command = spec
                .command
                .as_ref()
                .ok_or("COMMAND health check without a command")?;
            let mut c = sandbox::command(&sandbox::Spec { command, env, dir })
                .map_err(|e| e.to_string())?;
            // A command check runs as its task does.
            if let Some(u) = user {
                u.switch_on_spawn(&mut c);
            }
            c.kill_on_drop(true)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            let status = c
                .status()
                .await
                .map_err(|e| format!("cannot run the health check command: {e}"))?;
            if status.success() {
                Ok(())
            } else {
                Err(format!("health check command exited with {status}"))
            }
        }
        Type::Tcp => {
            let port = spec.tcp.as_ref().map_or(0, |t| t.port);
            tokio::net::TcpStream::connect(("127.0.0.1", port as u16))
                .await
                .map(drop)
                .map_err(|e| format!("TCP connection to port {port} failed: {e}"))
        }
        Type::Http => {
            let http = spec.http.clone().unwrap_or_default();
            let scheme = http.scheme.unwrap_or_else(|| "http".into());
            if scheme != "http" {
                return Err(format!(
                    "{scheme} health checks are not supported; use http"
                ));
            }
            let path = http.path.unwrap_or_else(|| "/".into());
            let path = if path.starts_with('/') {
                path
            } else {
                format!("/{path}")
            };
            let url = format!("http://127.0.0.1:{}{path}", http.port);
            let response = http_client()
                .get(&url)
                .send()
                .await
                .map_err(|e| format!("GET {url} failed: {e}"))?;
            let code = u32::from(response.status().as_u16());
            let ok = if http.statuses.is_empty() {
                (200..400).contains(&code)
            } else {
                http.statuses.contains(&code)
            };
            if ok {
                Ok(())
            } else {
                Err(format!("GET {url} answered {code}"))
            }
        }
        Type::Unknown => Err("health check of unknown type".into()),
    }
}

/// The client of HTTP checks, built once and plain (reqwest's default
/// client parses every system root certificate each time one is built).
fn http_client() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        // A fresh connection per check, as Mesos' checks make.
        agora_rpc::tls::plain_reqwest()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use warp::Filter as _;

    fn spec(kind: Type) -> v1::HealthCheck {
        let mut s = v1::HealthCheck {
            delay_seconds: Some(0.0),
            interval_seconds: Some(1.0),
            timeout_seconds: Some(2.0),
            consecutive_failures: Some(3),
            grace_period_seconds: Some(5.0),
            ..Default::default()
        };
        s.set_type(kind);
        s
    }

    #[test]
    fn grace_reports_and_kills_follow_mesos() {
        let t0 = Instant::now();
        let mut c = Checker::new(spec(Type::Tcp), t0);
        assert!(c.due(t0));
        assert!(!c.due(t0), "one attempt at a time");
        // Failures inside the grace period before any success are ignored.
        assert_eq!(c.result(t0, Err("no".into())), Verdict::Quiet);
        let t1 = t0 + Duration::from_secs(1);
        assert!(c.due(t1));
        assert_eq!(
            c.result(t1, Ok(())),
            Verdict::Report {
                healthy: true,
                cause: None
            }
        );
        assert_eq!(c.result(t1, Ok(())), Verdict::Quiet, "no news");
        // After a success, failures count even inside the grace period.
        assert!(matches!(
            c.result(t1, Err("a".into())),
            Verdict::Report { healthy: false, .. }
        ));
        assert!(matches!(
            c.result(t1, Err("b".into())),
            Verdict::Report { healthy: false, .. }
        ));
        assert!(matches!(
            c.result(t1, Err("c".into())),
            Verdict::Kill { .. }
        ));
        // Outside the grace period failures count from the start.
        let mut c = Checker::new(spec(Type::Tcp), t0);
        let late = t0 + Duration::from_secs(6);
        assert!(matches!(
            c.result(late, Err("x".into())),
            Verdict::Report { healthy: false, .. }
        ));
    }

    #[tokio::test]
    async fn probes_tcp_http_and_commands() {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = u32::from(listener.local_addr().unwrap().port());
        let routes = warp::path("health").map(|| "ok").or(warp::path("sick")
            .map(|| warp::reply::with_status("no", http::StatusCode::SERVICE_UNAVAILABLE)));
        tokio::spawn(agora_rpc::http::serve(
            listener,
            routes,
            std::future::pending(),
        ));
        let t = Duration::from_secs(2);

        let mut tcp = spec(Type::Tcp);
        tcp.tcp = Some(v1::health_check::TcpCheckInfo {
            port,
            protocol: None,
        });
        assert_eq!(probe(&tcp, &[], dir.path(), t, None).await, Ok(()));
        tcp.tcp = Some(v1::health_check::TcpCheckInfo {
            port: 1,
            protocol: None,
        });
        assert!(probe(&tcp, &[], dir.path(), t, None).await.is_err());

        let mut web = spec(Type::Http);
        web.http = Some(v1::health_check::HttpCheckInfo {
            port,
            path: Some("/health".into()),
            ..Default::default()
        });
        assert_eq!(probe(&web, &[], dir.path(), t, None).await, Ok(()));
        web.http.as_mut().unwrap().path = Some("/sick".into());
        let err = probe(&web, &[], dir.path(), t, None).await.unwrap_err();
        assert!(err.contains("503"), "{err}");

        let mut cmd = spec(Type::Command);
        cmd.command = Some(v1::CommandInfo {
            value: Some("test \"$X\" = yes".into()),
            ..Default::default()
        });
        let env = [("X".to_string(), "yes".to_string())];
        assert_eq!(probe(&cmd, &env, dir.path(), t, None).await, Ok(()));
        assert!(probe(&cmd, &[], dir.path(), t, None).await.is_err());
        cmd.command.as_mut().unwrap().value = Some("sleep 5".into());
        let err = probe(&cmd, &[], dir.path(), Duration::from_millis(200), None)
            .await
            .unwrap_err();
        assert!(err.contains("timed out"), "{err}");
    }
}
