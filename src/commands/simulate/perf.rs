//! The `perf` block of a simulation's output: the simulator counts the events it handled, this times
//! the run on the wall clock and reads the process's peak memory (the simulator itself reads no clock
//! and no `/proc`, so its results depend on the inputs alone).

use std::time::Duration;

use drover_sim::report::Perf;
use drover_sim::stats::round3;

/// `events` handled in `wall`, with the peak resident set so far.
pub fn measured(events: u64, wall: Duration) -> Perf {
    let secs = wall.as_secs_f64();
    Perf {
        events,
        wall_seconds: round3(secs),
        events_per_second: if secs > 0.0 {
            (events as f64 / secs).round()
        } else {
            0.0
        },
        peak_rss_bytes: peak_rss_bytes(),
    }
}

/// The process's peak resident set size from `/proc/self/status` (Linux); 0 elsewhere.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
            let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb * 1024)
        })
        .unwrap_or(0)
}
