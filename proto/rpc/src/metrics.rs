//! Prometheus exposition for every daemon, in the text format 0.0.4 that
//! Prometheus scrapes and `promtool check metrics` reads (the `prometheus`
//! crate; `prometheus-client` writes OpenMetrics, whose counter families
//! promtool 2.42 refuses).
//!
//! Names follow Prometheus' conventions: `agora_<component>_…`, units in
//! the name (`_seconds`, `_bytes`), counters end in `_total`, ratios in
//! `_ratio`. Mesos' `/metrics/snapshot` keys (what dashboards built for
//! Mesos read) are converted by [`snapshot`], each HELP naming its key.

use std::time::Duration;

pub use prometheus;
use prometheus::core::Collector;
use prometheus::{Encoder as _, HistogramOpts, HistogramVec, Opts, Registry, TextEncoder};

/// The Content-Type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Latency buckets from 0.5 ms to about 33 s (×2).
fn latency_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.0005, 2.0, 17).unwrap_or_default()
}

/// A histogram of latencies in seconds, `agora_<component>_<name>_seconds`,
/// by `labels`.
pub fn histogram(component: &str, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(format!("agora_{component}_{name}_seconds"), help)
        .buckets(latency_buckets());
    HistogramVec::new(opts, labels).expect("a valid histogram")
}

/// One HTTP server's requests: latency (to the response's head) and count,
/// by method and status code.
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    duration: HistogramVec,
}

impl HttpMetrics {
    /// `agora_<component>_http_request_duration_seconds`.
    pub fn new(component: &str) -> HttpMetrics {
        HttpMetrics {
            duration: histogram(
                component,
                "http_request_duration",
                "Time from an HTTP request to its response's head, by method and status code.",
                &["method", "code"],
            ),
        }
    }

    /// Records one request.
    pub fn observe(&self, method: &http::Method, code: u16, took: Duration) {
        // Known methods only: a label value per request line would let
        // clients grow the series without bound.
        let method = match *method {
            http::Method::GET => "GET",
            http::Method::POST => "POST",
            http::Method::PUT => "PUT",
            http::Method::DELETE => "DELETE",
            http::Method::PATCH => "PATCH",
            http::Method::HEAD => "HEAD",
            http::Method::OPTIONS => "OPTIONS",
            _ => "other",
        };
        let code = code.to_string();
        self.duration
            .with_label_values(&[method, code.as_str()])
            .observe(took.as_secs_f64());
    }

    /// What it collects, for [`render`].
    pub fn collector(&self) -> Box<dyn Collector> {
        Box::new(self.duration.clone())
    }
}

/// How a Mesos snapshot key is exposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A value that goes up and down.
    Gauge,
    /// A count since the process started.
    Counter,
}

/// The Prometheus name and kind of Mesos' `key` (e.g. `master/tasks_finished`
/// → `agora_master_tasks_finished_total`, a counter; `master/cpus_percent`
/// → `agora_master_cpus_ratio`; `master/cpus_total` → `agora_master_cpus`;
/// `master/uptime_secs` → `agora_master_uptime_seconds`).
pub fn prometheus_name(key: &str) -> (String, Kind) {
    let mut name: String = key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let base = key.rsplit('/').next().unwrap_or(key);
    let counter = is_counter(base);
    if let Some(stem) = name.strip_suffix("_percent") {
        name = format!("{stem}_ratio");
    } else if let Some(stem) = name.strip_suffix("_secs") {
        name = format!("{stem}_seconds");
    } else if !counter && let Some(stem) = name.strip_suffix("_total") {
        // A gauge of capacity (cpus_total): `_total` is for counters.
        name = stem.to_string();
    }
    if counter {
        name.push_str("_total");
        (format!("agora_{name}"), Kind::Counter)
    } else {
        (format!("agora_{name}"), Kind::Gauge)
    }
}

/// Mesos' counters among its snapshot keys (the rest are gauges).
fn is_counter(base: &str) -> bool {
    const TERMINAL: [&str; 8] = [
        "tasks_finished",
        "tasks_failed",
        "tasks_killed",
        "tasks_lost",
        "tasks_error",
        "tasks_dropped",
        "tasks_gone",
        "tasks_gone_by_operator",
    ];
    TERMINAL.contains(&base)
        || base.starts_with("messages_")
        || base.starts_with("offers_")
        || base.ends_with("_status_updates")
        || base.ends_with("_runs")
        || base.ends_with("_terminated")
        || base == "recovery_errors"
        || base == "tasks_launched"
}

/// Gauges and counters for a Mesos snapshot, each HELP naming its key.
pub fn snapshot(values: &[(String, f64)]) -> Vec<Box<dyn Collector>> {
    let mut out: Vec<Box<dyn Collector>> = Vec::with_capacity(values.len());
    for (key, value) in values {
        let (name, kind) = prometheus_name(key);
        let opts = Opts::new(name, format!("Mesos' {key}."));
        match kind {
            Kind::Counter => {
                if let Ok(c) = prometheus::Counter::with_opts(opts) {
                    c.inc_by(value.max(0.0));
                    out.push(Box::new(c));
                }
            }
            Kind::Gauge => {
                if let Ok(g) = prometheus::Gauge::with_opts(opts) {
                    g.set(*value);
                    out.push(Box::new(g));
                }
            }
        }
    }
    out
}

/// A gauge `name` with `help` at `value`.
pub fn gauge(name: &str, help: &str, value: f64) -> Box<dyn Collector> {
    let g = prometheus::Gauge::new(name, help).expect("a valid gauge");
    g.set(value);
    Box::new(g)
}

/// The text exposition of `collectors` (a name registered twice is
/// skipped, not an error: a scrape never fails).
pub fn render(collectors: Vec<Box<dyn Collector>>) -> String {
    let registry = Registry::new();
    for c in collectors {
        if let Err(e) = registry.register(c) {
            tracing::debug!(error = %e, "metric left out");
        }
    }
    let mut out = Vec::new();
    let _ = TextEncoder::new().encode(&registry.gather(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesos_keys_become_prometheus_names() {
        let name = |k: &str| prometheus_name(k);
        assert_eq!(
            name("master/tasks_finished"),
            ("agora_master_tasks_finished_total".into(), Kind::Counter)
        );
        assert_eq!(
            name("master/tasks_running"),
            ("agora_master_tasks_running".into(), Kind::Gauge)
        );
        assert_eq!(
            name("master/cpus_total"),
            ("agora_master_cpus".into(), Kind::Gauge)
        );
        assert_eq!(
            name("master/cpus_percent"),
            ("agora_master_cpus_ratio".into(), Kind::Gauge)
        );
        assert_eq!(
            name("slave/uptime_secs"),
            ("agora_slave_uptime_seconds".into(), Kind::Gauge)
        );
        assert_eq!(
            name("allocator/mesos/allocation_runs"),
            (
                "agora_allocator_mesos_allocation_runs_total".into(),
                Kind::Counter
            )
        );
        assert_eq!(name("master/valid_status_updates").1, Kind::Counter);
    }

    #[test]
    fn the_exposition_has_types_and_help() {
        let http = HttpMetrics::new("master");
        http.observe(&http::Method::GET, 200, Duration::from_millis(3));
        http.observe(
            &http::Method::from_bytes(b"BREW").unwrap(),
            400,
            Duration::ZERO,
        );
        let mut all = snapshot(&[
            ("master/tasks_finished".into(), 4.0),
            ("master/cpus_total".into(), 2.0),
        ]);
        all.push(http.collector());
        let text = render(all);
        assert!(text.contains("# TYPE agora_master_tasks_finished_total counter\nagora_master_tasks_finished_total 4\n"), "{text}");
        assert!(
            text.contains("# HELP agora_master_cpus Mesos' master/cpus_total."),
            "{text}"
        );
        assert!(
            text.contains(
                r#"agora_master_http_request_duration_seconds_count{code="200",method="GET"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"method="other""#), "{text}");
    }
}
