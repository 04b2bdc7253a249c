//! Durations as Mesos and its users write them: `5secs`, `250ms`, `1mins`
//! (Mesos' flags and executor environment) and the short forms people type
//! (`1s`, `500ms`, `10m`, `2h`, or a plain number of seconds). One parser
//! and one formatter for every flag and variable.

use std::time::Duration;

/// Parses `5secs`, `250ms`, `1mins`, `1s`, `10m`, `2h`, `1d`, `3weeks` or a
/// plain number of seconds.
pub fn parse(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("'{s}' is not a valid duration"));
    }
    let split = s
        .find(|c: char| c.is_ascii_alphabetic())
        .ok_or_else(|| format!("'{s}' is not a duration"))?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a duration"))?;
    let secs = match unit {
        "ns" => n / 1e9,
        "us" => n / 1e6,
        "ms" => n / 1e3,
        "s" | "sec" | "secs" => n,
        "m" | "min" | "mins" => n * 60.0,
        "h" | "hr" | "hrs" => n * 3600.0,
        "d" | "day" | "days" => n * 86400.0,
        "w" | "week" | "weeks" => n * 604_800.0,
        _ => return Err(format!("'{s}': unknown unit '{unit}' (use ms, s, m, h, d)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("'{s}' is not a valid duration"))
}

/// Mesos' form: the largest unit the duration is a whole number of
/// (`2weeks`, `3days`, `1hrs`, `10mins`, `15secs`, `250ms`), else seconds
/// with a fraction, else nanoseconds.
pub fn format(d: Duration) -> String {
    let ns = d.as_nanos();
    let units: [(u128, &str); 6] = [
        (7 * 24 * 3600 * 1_000_000_000, "weeks"),
        (24 * 3600 * 1_000_000_000, "days"),
        (3600 * 1_000_000_000, "hrs"),
        (60 * 1_000_000_000, "mins"),
        (1_000_000_000, "secs"),
        (1_000_000, "ms"),
    ];
    for (size, name) in units {
        if ns >= size && ns.is_multiple_of(size) {
            return format!("{}{name}", ns / size);
        }
    }
    if ns >= 1_000_000_000 {
        return format!("{}secs", d.as_secs_f64());
    }
    format!("{ns}ns")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesos_and_short_forms_round_trip() {
        for (text, d) in [
            ("5secs", Duration::from_secs(5)),
            ("250ms", Duration::from_millis(250)),
            ("1mins", Duration::from_secs(60)),
            ("10m", Duration::from_secs(600)),
            ("2h", Duration::from_secs(7200)),
            ("1.5", Duration::from_millis(1500)),
            ("3weeks", Duration::from_secs(3 * 604_800)),
        ] {
            assert_eq!(parse(text), Ok(d), "{text}");
            assert_eq!(parse(&format(d)), Ok(d), "{text}");
        }
        assert_eq!(format(Duration::from_secs(15)), "15secs");
        assert_eq!(format(Duration::from_secs(600)), "10mins");
        assert_eq!(format(Duration::from_secs(7200)), "2hrs");
        assert_eq!(format(Duration::from_millis(250)), "250ms");
        assert_eq!(format(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format(Duration::from_nanos(1_500)), "1500ns");
        for bad in ["", "x", "5 parsecs", "-1s", "1e400"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
