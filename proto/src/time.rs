//! Time as the cores (master, agent) see it: a point given by the shell,
//! never read from a clock. The shell passes wall-clock time (so statuses
//! carry real timestamps) advanced monotonically by its [`Clock`]; tests pass
//! any value they like.

use std::ops::{Add, Sub};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(u64);

impl Time {
    /// The epoch itself; tests usually start from [`Time::from_secs`].
    pub const ZERO: Time = Time(0);

    /// A time `secs` seconds after the epoch.
    pub fn from_secs(secs: u64) -> Time {
        Time(secs.saturating_mul(1_000_000_000))
    }

    /// A time `nanos` nanoseconds after the epoch.
    pub fn from_nanos(nanos: u64) -> Time {
        Time(nanos)
    }

    /// Nanoseconds since the epoch.
    pub fn as_nanos(self) -> u64 {
        self.0
    }

    /// Seconds since the epoch, as Mesos writes `TaskStatus.timestamp`.
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e9
    }

    /// `self - earlier`, or zero.
    pub fn since(self, earlier: Time) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Time {
    type Output = Time;
    fn add(self, d: Duration) -> Time {
        Time(
            self.0
                .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        )
    }
}

impl Sub<Duration> for Time {
    type Output = Time;
    fn sub(self, d: Duration) -> Time {
        Time(
            self.0
                .saturating_sub(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        )
    }
}

/// The shell's clock: wall-clock time advanced monotonically, so a core's
/// timestamps are real and its timers never jump. Maps between [`Time`] and
/// instants.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: Instant,
    start_wall: Duration,
}

impl Clock {
    /// A clock anchored now.
    pub fn new() -> Self {
        Clock {
            start: Instant::now(),
            start_wall: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
        }
    }

    /// The current time.
    pub fn now(&self) -> Time {
        Time::from_nanos(
            u64::try_from((self.start_wall + self.start.elapsed()).as_nanos()).unwrap_or(u64::MAX),
        )
    }

    /// The instant at which `t` falls.
    pub fn instant(&self, t: Time) -> Instant {
        let offset = Duration::from_nanos(t.as_nanos()).saturating_sub(self.start_wall);
        self.start + offset
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}
