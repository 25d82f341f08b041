//! Streaming statistics: a wait histogram and time integrals of the fleet, O(1) per event and flat in
//! memory however many jobs a run simulates.

use drover_core::Timestamp;
use drover_core::state::Counts;
use hdrhistogram::Histogram;

/// The largest wait the histogram resolves (30 days); longer waits are recorded as this.
const MAX_WAIT_MS: u64 = 30 * 86_400_000;

pub(crate) struct Stats {
    last: Timestamp,
    /// Machines per state right now, summed over runners: creating, idle, busy, removing.
    machines: [u64; 4],
    /// Machine-milliseconds per state, in the same order.
    pub(crate) machine_ms: [u128; 4],
    /// Jobs that arrived and have neither started nor been failed.
    pub(crate) waiting: u64,
    pub(crate) waiting_ms: u128,
    /// Why the waiting jobs wait right now, and job-milliseconds of waiting by cause (see
    /// [`WaitCause`]).
    pub(crate) cause: WaitCause,
    pub(crate) waiting_by_cause_ms: [u128; 3],
    pub(crate) peak_machines: u64,
    /// Every wait recorded, once [`Stats::settle_waits`] has run.
    pub(crate) waits: Histogram<u64>,
    /// Waits of 0 ms not yet in `waits`: most jobs of a warm pool start at once, and adding them in
    /// one count at the end leaves the histogram as a record each would, for less work.
    zero_waits: u64,
    pub(crate) wait_sum_ms: u128,
    pub(crate) wait_max_ms: u64,
    pub(crate) waited: u64,
    pub(crate) arrived: u64,
    pub(crate) completed: u64,
    pub(crate) failed: u64,
    pub(crate) events: u64,
    pub(crate) series: Option<Series>,
}

impl Stats {
    pub(crate) fn new(start: Timestamp, series: Option<Series>) -> Stats {
        Stats {
            last: start,
            machines: [0; 4],
            machine_ms: [0; 4],
            waiting: 0,
            waiting_ms: 0,
            cause: WaitCause::Request,
            waiting_by_cause_ms: [0; 3],
            peak_machines: 0,
            waits: Histogram::new_with_max(MAX_WAIT_MS, 3)
                .expect("constant histogram bounds are valid"),
            zero_waits: 0,
            wait_sum_ms: 0,
            wait_max_ms: 0,
            waited: 0,
            arrived: 0,
            completed: 0,
            failed: 0,
            events: 0,
            series,
        }
    }

    /// Integrates the current levels up to `now`.
    #[inline]
    pub(crate) fn advance(&mut self, now: Timestamp) {
        if now <= self.last {
            return;
        }
        let dt = now.0 - self.last.0;
        for (acc, n) in self.machine_ms.iter_mut().zip(self.machines) {
            *acc += u128::from(n * dt);
        }
        self.waiting_ms += u128::from(self.waiting * dt);
        self.waiting_by_cause_ms[self.cause as usize] += u128::from(self.waiting * dt);
        if let Some(series) = &mut self.series {
            series.integrate(self.last, now, &self.machines, self.waiting);
        }
        self.last = now;
    }

    /// Reads the fleet's levels after a step (the core's counters, so O(runners)).
    #[inline]
    pub(crate) fn set_machines<'a>(&mut self, counts: impl Iterator<Item = &'a Counts>) {
        let mut m = [0u64; 4];
        for c in counts {
            m[0] += u64::from(c.creating);
            m[1] += u64::from(c.idle);
            m[2] += u64::from(c.busy);
            m[3] += u64::from(c.removing);
        }
        self.machines = m;
        self.peak_machines = self.peak_machines.max(m.iter().sum());
    }

    pub(crate) fn record_wait(&mut self, now: Timestamp, wait_ms: u64) {
        if wait_ms == 0 {
            self.zero_waits += 1;
        } else {
            self.waits.saturating_record(wait_ms);
            self.wait_sum_ms += u128::from(wait_ms);
            self.wait_max_ms = self.wait_max_ms.max(wait_ms);
            self.waited += 1;
        }
        if let Some(series) = &mut self.series {
            series.record_wait(now, wait_ms);
        }
    }

    /// Jobs started so far (their waits recorded).
    pub(crate) fn started(&self) -> u64 {
        self.waits.len() + self.zero_waits
    }

    /// Adds the pending zero waits to `waits`: before anything reads the histogram.
    pub(crate) fn settle_waits(&mut self) {
        self.waits
            .saturating_record_n(0, std::mem::take(&mut self.zero_waits));
    }
}

/// Why jobs are waiting at an instant, judged from the fleet (for the runners together).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WaitCause {
    /// No machine is free and none may be added: `limit` or `concurrent` is reached.
    Limit = 0,
    /// No machine is free, and machines are being created.
    Creating = 1,
    /// A machine is free or may be asked for: the job waits for the next job request (its pacing
    /// by `check_interval`, the IdleCount > 0 gate, or a creation not yet started).
    Request = 2,
}

/// Levels over time in equal buckets, for plots. When the run outgrows `2 × points` buckets, pairs
/// are merged and the width doubles: memory stays bounded whatever the run's length.
pub struct Series {
    start: Timestamp,
    width_ms: u64,
    points: usize,
    buckets: Vec<Bucket>,
}

#[derive(Clone)]
struct Bucket {
    /// Machine-ms per state, then job-ms waiting.
    integrals: [u128; 5],
    waits: Histogram<u32>,
}

impl Bucket {
    fn new() -> Bucket {
        // One significant digit (≈6% resolution) keeps a bucket near 2 KiB.
        Bucket {
            integrals: [0; 5],
            waits: Histogram::new_with_max(MAX_WAIT_MS, 1).expect("valid bounds"),
        }
    }
}

/// One point of a [`Series`]: averages over `[t, t + width)`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SeriesPoint {
    /// Seconds since the workload's start.
    pub t: f64,
    pub creating: f64,
    pub idle: f64,
    pub busy: f64,
    pub removing: f64,
    /// Jobs waiting (in the coordinator's queue or the runner's).
    pub queued: f64,
    /// p95 of the waits of jobs that started in the bucket, seconds.
    pub wait_p95: Option<f64>,
}

impl Series {
    /// About `points` buckets over `expected_ms` (a guess: a longer run merges buckets).
    pub fn new(start: Timestamp, expected_ms: u64, points: usize) -> Series {
        let points = points.max(2);
        Series {
            start,
            width_ms: (expected_ms / points as u64).max(1_000),
            points,
            buckets: Vec::new(),
        }
    }

    /// The index of the bucket holding `t`, merging and growing as needed.
    fn index(&mut self, t: Timestamp) -> usize {
        let mut i = ((t.0 - self.start.0) / self.width_ms) as usize;
        while i >= 2 * self.points {
            self.merge_pairs();
            i = ((t.0 - self.start.0) / self.width_ms) as usize;
        }
        if i >= self.buckets.len() {
            self.buckets.resize_with(i + 1, Bucket::new);
        }
        i
    }

    fn merge_pairs(&mut self) {
        let old = std::mem::take(&mut self.buckets);
        let mut it = old.into_iter();
        while let Some(mut a) = it.next() {
            if let Some(b) = it.next() {
                for (x, y) in a.integrals.iter_mut().zip(b.integrals) {
                    *x += y;
                }
                // Same bounds on both sides: adding cannot fail.
                let _ = a.waits.add(&b.waits);
            }
            self.buckets.push(a);
        }
        self.width_ms *= 2;
    }

    fn integrate(&mut self, from: Timestamp, to: Timestamp, machines: &[u64; 4], waiting: u64) {
        let mut t = from;
        while t < to {
            let i = self.index(t);
            let bucket_end = Timestamp(self.start.0 + (i as u64 + 1) * self.width_ms);
            let until = bucket_end.min(to);
            let dt = u128::from(until.0 - t.0);
            let b = &mut self.buckets[i];
            for (acc, n) in b
                .integrals
                .iter_mut()
                .zip(machines.iter().chain([&waiting]))
            {
                *acc += u128::from(*n) * dt;
            }
            t = until;
        }
    }

    fn record_wait(&mut self, now: Timestamp, wait_ms: u64) {
        let i = self.index(now);
        self.buckets[i].waits.saturating_record(wait_ms);
    }

    /// The buckets up to `end`, as averages.
    pub fn points(&self, end: Timestamp) -> Vec<SeriesPoint> {
        let mut out = Vec::new();
        for (i, b) in self.buckets.iter().enumerate() {
            let t0 = self.start.0 + i as u64 * self.width_ms;
            if t0 >= end.0 {
                break;
            }
            let width = (end.0.min(t0 + self.width_ms) - t0) as f64;
            let avg = |k: usize| round3(b.integrals[k] as f64 / width);
            out.push(SeriesPoint {
                t: round3((t0 - self.start.0) as f64 / 1000.0),
                creating: avg(0),
                idle: avg(1),
                busy: avg(2),
                removing: avg(3),
                queued: avg(4),
                wait_p95: (!b.waits.is_empty())
                    .then(|| round3(b.waits.value_at_quantile(0.95) as f64 / 1000.0)),
            });
        }
        out
    }
}

/// Rounds to 3 decimals: reports show milliseconds at most, and fixed rounding keeps the JSON identical
/// across machines.
pub fn round3(x: f64) -> f64 {
    if x.is_finite() {
        (x * 1000.0).round() / 1000.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_merges_and_averages() {
        let mut s = Series::new(Timestamp(0), 4_000, 2); // width 2 s, at most 4 buckets
        s.integrate(Timestamp(0), Timestamp(10_000), &[1, 2, 3, 0], 5);
        // 10 s does not fit 4 × 2 s: merged once to 4 s buckets.
        let pts = s.points(Timestamp(10_000));
        assert_eq!(pts.len(), 3);
        assert_eq!(
            pts.iter().map(|p| p.t).collect::<Vec<_>>(),
            vec![0.0, 4.0, 8.0]
        );
        assert!(
            pts.iter()
                .all(|p| p.idle == 2.0 && p.busy == 3.0 && p.queued == 5.0)
        );
        s.record_wait(Timestamp(9_000), 4_000);
        // One significant digit: within the histogram's ≈6% resolution.
        let p95 = s.points(Timestamp(10_000))[2].wait_p95.unwrap();
        assert!((4.0..4.0 * 1.07).contains(&p95), "{p95}");
        assert_eq!(s.points(Timestamp(10_000))[0].wait_p95, None);
    }
}
