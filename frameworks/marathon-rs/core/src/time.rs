//! Timestamps as Marathon writes them: ISO-8601 UTC with milliseconds and
//! `Z` (`2015-09-30T09:09:17.614Z`); marathon-python parses nothing else.
//! Times are passed in by the shell (milliseconds since the Unix epoch).

use chrono::{DateTime, SecondsFormat, Utc};

/// Milliseconds since the Unix epoch.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Millis(pub i64);

impl Millis {
    /// `2015-09-30T09:09:17.614Z`.
    pub fn iso(self) -> String {
        DateTime::<Utc>::from_timestamp_millis(self.0)
            .unwrap_or_default()
            .to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    /// Parses the ISO form (with or without millis, `Z` or an offset).
    pub fn parse(s: &str) -> Option<Millis> {
        DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|d| Millis(d.timestamp_millis()))
    }

    /// `self + ms`.
    pub fn plus(self, ms: i64) -> Millis {
        Millis(self.0.saturating_add(ms))
    }

    /// Seconds from `self` to `later` (may be negative).
    pub fn seconds_until(self, later: Millis) -> f64 {
        (later.0 - self.0) as f64 / 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_round_trip() {
        let t = Millis(1_443_604_157_614);
        assert_eq!(t.iso(), "2015-09-30T09:09:17.614Z");
        assert_eq!(Millis::parse(&t.iso()), Some(t));
        assert_eq!(Millis(1_443_604_157_000).iso(), "2015-09-30T09:09:17.000Z");
        assert_eq!(
            Millis::parse("2015-09-30T09:09:17Z"),
            Some(Millis(1_443_604_157_000))
        );
    }
}
