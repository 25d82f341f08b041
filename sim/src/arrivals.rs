//! The stream of arriving jobs, generated lazily so memory does not grow with the run.
//!
//! Inter-arrival gaps, job durations and routing draw from separate random streams: the traffic of a
//! seed is then the same whatever the config, so the points of a sweep are compared on identical
//! jobs (common random numbers).

use chrono::{Datelike, TimeZone, Timelike, Weekday};
use chrono_tz::Tz;
use drover_core::{RunnerId, Timestamp};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::dist::{Dist, exponential};
use crate::routing::Routing;
use crate::workload::{Arrivals, Batch, Trace, Workload};

/// One job entering the coordinator's queue.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct NewJob {
    pub at: Timestamp,
    pub duration_ms: u64,
    pub runner: RunnerId,
}

pub(crate) struct ArrivalStream<'w> {
    source: Source<'w>,
    duration: Option<&'w Dist>,
    routing: &'w Routing,
    start: Timestamp,
    end: Option<Timestamp>,
    remaining: Option<u64>,
    gaps: ChaCha8Rng,
    durations: ChaCha8Rng,
    routes: ChaCha8Rng,
    /// Jobs still to emit at `batch_at`.
    batch_left: u32,
    batch_at: Timestamp,
    done: bool,
}

enum Source<'w> {
    Poisson {
        mean_gap_ms: f64,
        batch: Batch,
        t: f64,
    },
    Diurnal {
        hourly: Box<[f64; 24]>,
        weekend_factor: f64,
        tz: Tz,
        batch: Batch,
        t: f64,
        segment: Segment,
    },
    Trace {
        trace: &'w Trace,
        next: usize,
    },
}

/// A stretch of constant rate: one local hour.
#[derive(Copy, Clone, Default)]
struct Segment {
    end: f64,
    rate_per_ms: f64,
}

impl<'w> ArrivalStream<'w> {
    pub(crate) fn new(workload: &'w Workload, routing: &'w Routing, rngs: [ChaCha8Rng; 3]) -> Self {
        let [gaps, durations, routes] = rngs;
        let source = match &workload.arrivals {
            Arrivals::Poisson {
                rate_per_min,
                batch,
            } => Source::Poisson {
                mean_gap_ms: 60_000.0 / rate_per_min,
                batch: *batch,
                t: 0.0,
            },
            Arrivals::Diurnal {
                hourly_per_min,
                weekend_factor,
                timezone,
                batch,
            } => Source::Diurnal {
                hourly: Box::new(*hourly_per_min),
                weekend_factor: *weekend_factor,
                tz: *timezone,
                batch: *batch,
                t: 0.0,
                segment: Segment::default(),
            },
            Arrivals::Trace(trace) => Source::Trace { trace, next: 0 },
        };
        ArrivalStream {
            source,
            duration: workload.duration.as_ref(),
            routing,
            start: workload.start,
            end: workload
                .horizon_ms
                .map(|h| Timestamp(workload.start.0.saturating_add(h))),
            remaining: workload.jobs,
            gaps,
            durations,
            routes,
            batch_left: 0,
            batch_at: workload.start,
            done: false,
        }
    }

    /// The next job to simulate, or `None` once arrivals have stopped.
    ///
    /// Inlined into the engine's one caller: the job then reaches it in registers, not through a
    /// copy in memory.
    #[inline]
    pub(crate) fn next_job(&mut self) -> Option<NewJob> {
        loop {
            if self.done || self.remaining == Some(0) {
                self.done = true;
                return None;
            }
            let (at, recorded, route) = self.next_arrival()?;
            let runner = match route {
                Some(trace_runner) => self.routing.trace_runner(trace_runner, &mut self.routes),
                None => self.routing.synthetic(&mut self.routes),
            };
            let Some(runner) = runner else { continue };
            let duration_ms = match (recorded, self.duration) {
                (Some(d), _) => d,
                (None, Some(dist)) => dist.sample_ms(&mut self.durations),
                // The workload validator refuses this combination.
                (None, None) => 0,
            };
            if let Some(n) = &mut self.remaining {
                *n -= 1;
            }
            return Some(NewJob {
                at,
                duration_ms,
                runner,
            });
        }
    }

    /// The next arrival instant with its recorded duration and trace runner, if any.
    fn next_arrival(&mut self) -> Option<(Timestamp, Option<u64>, Option<Option<u16>>)> {
        if self.batch_left > 0 {
            self.batch_left -= 1;
            return Some((self.batch_at, None, None));
        }
        let (at, recorded, route, batch) = match &mut self.source {
            Source::Poisson {
                mean_gap_ms,
                batch,
                t,
            } => {
                *t += exponential(&mut self.gaps, *mean_gap_ms);
                (offset(self.start, *t), None, None, *batch)
            }
            Source::Diurnal {
                hourly,
                weekend_factor,
                tz,
                batch,
                t,
                segment,
            } => {
                let mut e = exponential(&mut self.gaps, 1.0);
                let horizon = self.end.map_or(f64::INFINITY, |end| {
                    end.0.saturating_sub(self.start.0) as f64
                });
                loop {
                    if *t >= segment.end {
                        *segment = local_hour(self.start, *t, *tz, hourly, *weekend_factor);
                    }
                    let mass = (segment.end - *t) * segment.rate_per_ms;
                    if segment.rate_per_ms > 0.0 && e <= mass {
                        *t += e / segment.rate_per_ms;
                        break;
                    }
                    e -= mass;
                    *t = segment.end;
                    if *t > horizon {
                        break;
                    }
                }
                (offset(self.start, *t), None, None, *batch)
            }
            Source::Trace { trace, next } => {
                let row = trace.rows.get(*next)?;
                *next += 1;
                (row.at, row.duration_ms, Some(row.runner), Batch::ONE)
            }
        };
        if self.end.is_some_and(|end| at > end) {
            self.done = true;
            return None;
        }
        if batch.max > 1 {
            let k = self.gaps.random_range(batch.min..=batch.max);
            self.batch_left = k - 1;
            self.batch_at = at;
        }
        Some((at, recorded, route))
    }
}

/// `start + t` in whole milliseconds (`t ≥ 0`, so the cast truncates down; it saturates).
fn offset(start: Timestamp, t_ms: f64) -> Timestamp {
    Timestamp(start.0.saturating_add(t_ms as u64))
}

/// The local hour containing `start + t`: its end (as an offset from `start`) and its rate.
fn local_hour(
    start: Timestamp,
    t: f64,
    tz: Tz,
    hourly: &[f64; 24],
    weekend_factor: f64,
) -> Segment {
    let at_ms = offset(start, t).0;
    let Some(local) = tz.timestamp_millis_opt(at_ms as i64).single() else {
        // Unrepresentable instants do not occur for epoch milliseconds; treat as a quiet hour.
        return Segment {
            end: t + 3_600_000.0,
            rate_per_ms: 0.0,
        };
    };
    let into_hour = u64::from(local.minute()) * 60_000
        + u64::from(local.second()) * 1_000
        + u64::from(local.timestamp_subsec_millis());
    let end = (at_ms - start.0 + (3_600_000 - into_hour)) as f64;
    let weekend = matches!(local.weekday(), Weekday::Sat | Weekday::Sun);
    let factor = if weekend { weekend_factor } else { 1.0 };
    let per_min = hourly[local.hour() as usize] * factor;
    Segment {
        end,
        rate_per_ms: per_min / 60_000.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::Routing;
    use crate::workload::{DEFAULT_START, Workload};
    use rand::SeedableRng;
    use std::path::Path;

    fn rngs() -> [ChaCha8Rng; 3] {
        [
            ChaCha8Rng::seed_from_u64(1),
            ChaCha8Rng::seed_from_u64(2),
            ChaCha8Rng::seed_from_u64(3),
        ]
    }

    #[test]
    fn diurnal_rates_follow_the_local_clock() {
        // Jobs only between 09:00 and 10:00 Berlin time (08:00–09:00 UTC in January), none at weekends.
        let mut hourly = vec!["0"; 24];
        hourly[9] = "60";
        let text = format!(
            "horizon = \"7d\"\n[arrivals]\nkind = \"diurnal\"\nhourly = [{}]\nweekend_factor = 0.0\n\
             timezone = \"Europe/Berlin\"\n[duration]\nkind = \"constant\"\nvalue = \"1m\"\n",
            hourly.join(",")
        );
        let w = Workload::parse(&text, Path::new("w.toml")).unwrap();
        let routing = Routing::single(RunnerId(0));
        let mut s = ArrivalStream::new(&w, &routing, rngs());
        let mut per_day = [0u32; 7];
        while let Some(job) = s.next_job() {
            let since = job.at.0 - DEFAULT_START.0;
            let hour_utc = (since / 3_600_000) % 24;
            assert_eq!(hour_utc, 8, "job at {}", job.at);
            per_day[(since / 86_400_000) as usize] += 1;
        }
        // 60 jobs/min for one hour: 3600 expected per weekday, sd 60.
        for (day, n) in per_day.iter().enumerate() {
            if day < 5 {
                assert!((3_300..3_900).contains(n), "day {day}: {n}");
            } else {
                assert_eq!(*n, 0, "weekend day {day}");
            }
        }
    }

    #[test]
    fn poisson_counts_and_batches() {
        let text = "horizon = \"1d\"\n[arrivals]\nkind = \"poisson\"\nrate_per_min = 2.0\nbatch = [1, 3]\n\
                    [duration]\nkind = \"constant\"\nvalue = \"1m\"\n";
        let w = Workload::parse(text, Path::new("w.toml")).unwrap();
        let routing = Routing::single(RunnerId(0));
        let mut s = ArrivalStream::new(&w, &routing, rngs());
        let mut n = 0u32;
        let mut last = Timestamp::ZERO;
        while let Some(job) = s.next_job() {
            assert!(job.at >= last);
            last = job.at;
            n += 1;
        }
        // 2880 arrivals × 2 jobs on average = 5760 (sd ≈ 120 with the batch variance).
        assert!((5_200..6_300).contains(&n), "{n}");
        assert!(last.0 <= DEFAULT_START.0 + 86_400_000);
    }

    #[test]
    fn the_job_count_stops_arrivals() {
        let text = "jobs = 10\n[arrivals]\nkind = \"poisson\"\nrate_per_min = 2.0\n\
                    [duration]\nkind = \"exponential\"\nmean = \"1m\"\n";
        let w = Workload::parse(text, Path::new("w.toml")).unwrap();
        let routing = Routing::single(RunnerId(0));
        let mut s = ArrivalStream::new(&w, &routing, rngs());
        assert_eq!(std::iter::from_fn(|| s.next_job()).count(), 10);
    }
}
