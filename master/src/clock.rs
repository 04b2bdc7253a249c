//! The shell's clock: wall-clock time advanced monotonically, so the core's
//! timestamps are real and its timers never jump.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agora_master_core::Time;

/// Maps between the core's [`Time`] and tokio instants.
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
