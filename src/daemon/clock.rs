//! The only place drover reads the clock: wall time as the core's [`Timestamp`], never going back.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use drover_core::Timestamp;

pub struct Clock {
    last: Timestamp,
}

impl Clock {
    pub fn new(not_before: Timestamp) -> Clock {
        Clock { last: not_before }
    }

    /// Now, clamped so that a wall clock stepping back (NTP) never moves the core's time back.
    pub fn now(&mut self) -> Timestamp {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, drover_core::millis);
        self.last = self.last.max(Timestamp(wall));
        self.last
    }

    /// How long until `t`, from the last reading.
    pub fn until(&self, t: Timestamp) -> Duration {
        t.since(self.last)
    }
}
