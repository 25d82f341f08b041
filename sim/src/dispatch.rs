//! The dispatch path between GitLab's job queue and the core's job requests, as GitLab serves it.
//!
//! Without Workhorse every request goes to Rails and is answered at once: a job, or an empty answer
//! with the runner's queue version (`X-GitLab-Last-Update`). With Workhorse's long polling a request
//! whose `last_update` is the runner's current version is held; a new job for the runner bumps the
//! version and ends the held requests with a bare `204` (not with the job): the runner gets the job
//! with its next request. A hold also ends, empty, when the long-poll timeout passes. Answers from
//! Rails take a round trip. The core decides when the next request goes
//! ([`drover_core::request_pause`]): at once after a long-poll answer, `check_interval` after a
//! fast empty one; the engine tells it how long each request was held and whether Workhorse
//! answered.
//!
//! This module is the pure model of one runner's line ([`Line`]) and of the timings
//! ([`Dispatch`]); the engine schedules what it decides. [`RequestTimer`] learns the timings from
//! a recording: when each request was sent (`RequestJob`) and answered.

use std::collections::{BTreeMap, VecDeque};

use drover_core::{JobId, Timestamp};

use crate::dist::Dist;

/// How the simulated coordinator answers job requests (this module models both).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Polling {
    /// Workhorse's long polling: a request with the current queue version is held until a job is
    /// enqueued (then answered empty: the job goes to the next request) or the poll times out.
    Long,
    /// A request is answered at once; when empty the runner waits `check_interval`.
    Interval,
    /// An idealised coordinator: a waiting request gets a job the moment one is pending (queueing
    /// theory's M/M/c; no GitLab serves jobs so).
    Push,
}

/// Workhorse's long-poll duration GitLab Runner's documentation cites.
pub const DEFAULT_LONG_POLL_MS: u64 = 50_000;

/// How long GitLab takes to answer job requests.
#[derive(Clone, Debug, PartialEq)]
pub struct Dispatch {
    /// How long Workhorse holds a request whose `last_update` is current (long polling only).
    pub long_poll_ms: u64,
    /// From a request to its answer when Rails answers it (a job, or an empty queue).
    pub round_trip: Dist,
}

impl Default for Dispatch {
    /// Workhorse's 50 s hold, and answers without delay.
    fn default() -> Self {
        Dispatch {
            long_poll_ms: DEFAULT_LONG_POLL_MS,
            round_trip: Dist::Constant { ms: 0.0 },
        }
    }
}

/// What becomes of a job request.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Rails hands out the oldest pending job.
    Job(JobId),
    /// Rails finds no job and tells the runner the queue version.
    Empty,
    /// Workhorse holds it; the number identifies the hold for its timeout.
    Held(u64),
}

/// What a new job does to the held requests.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Released {
    /// This many end with a bare `204` (Workhorse).
    Empty(usize),
    /// The oldest gets the job (push).
    Job(JobId),
}

/// One runner's view of GitLab: its pending jobs, queue version and held requests.
#[derive(Debug, Default)]
pub struct Line {
    pub queue: VecDeque<JobId>,
    version: u64,
    /// The version the runner last heard; `None` before its first empty answer (an empty
    /// `last_update` always goes to Rails).
    known: Option<u64>,
    /// Held requests: the hold's number and when it began.
    held: Vec<(u64, Timestamp)>,
    next_hold: u64,
}

impl Line {
    /// A job request arrives at `now`.
    pub fn request(&mut self, polling: Polling, now: Timestamp) -> Fate {
        let hold = match polling {
            Polling::Long => self.known == Some(self.version),
            Polling::Interval => false,
            Polling::Push => self.queue.is_empty(),
        };
        if hold {
            self.next_hold += 1;
            self.held.push((self.next_hold, now));
            return Fate::Held(self.next_hold);
        }
        match self.queue.pop_front() {
            Some(job) => Fate::Job(job),
            None => {
                self.known = Some(self.version);
                Fate::Empty
            }
        }
    }

    /// A job for this runner is enqueued: what becomes of the held requests. With
    /// [`Released::Empty`], `ended` is called with the start of each hold that ends.
    pub fn enqueue(
        &mut self,
        job: JobId,
        polling: Polling,
        mut ended: impl FnMut(Timestamp),
    ) -> Released {
        self.version += 1;
        if polling == Polling::Push && !self.held.is_empty() {
            self.held.remove(0);
            return Released::Job(job);
        }
        self.queue.push_back(job);
        let n = self.held.len();
        for (_, since) in self.held.drain(..) {
            ended(since);
        }
        Released::Empty(n)
    }

    /// The long-poll timeout of `hold` passed: whether it was still held (it ends empty).
    pub fn time_out(&mut self, hold: u64) -> bool {
        let before = self.held.len();
        self.held.retain(|(h, _)| *h != hold);
        self.held.len() < before
    }

    /// The runner gives up its requests in flight; returns how many were held.
    pub fn cancel(&mut self) -> usize {
        let n = self.held.len();
        self.held.clear();
        n
    }
}

/// Learns [`Dispatch`] and the polling mode from a recording's requests and answers.
#[derive(Debug, Default)]
pub struct RequestTimer {
    /// Requests in flight per runner, oldest first (answers come back in order per runner).
    sent: BTreeMap<u16, VecDeque<Timestamp>>,
    /// Round trips of answers with a job.
    jobs_ms: Vec<f64>,
    /// Round trips of empty answers.
    empty_ms: Vec<f64>,
}

/// An empty answer this much slower than the median job answer, and at least this slow, was held.
const HELD_FACTOR: f64 = 10.0;
const HELD_MIN_MS: f64 = 1_000.0;

impl RequestTimer {
    pub fn sent(&mut self, runner: u16, now: Timestamp) {
        self.sent.entry(runner).or_default().push_back(now);
    }

    /// An answer to `runner`'s oldest request in flight: with a job (`Some(true)`), empty, or a
    /// failure (`None`, not timed: errors and retries say nothing of the dispatch path).
    pub fn answered(&mut self, runner: u16, now: Timestamp, job: Option<bool>) {
        let Some(at) = self.sent.get_mut(&runner).and_then(VecDeque::pop_front) else {
            return;
        };
        let ms = now.0.saturating_sub(at.0) as f64;
        match job {
            Some(true) => self.jobs_ms.push(ms),
            Some(false) => self.empty_ms.push(ms),
            None => {}
        }
    }

    /// The polling mode and timings seen: a job is always answered by Rails, so job answers give
    /// the round trip; empty answers far slower than that were held by Workhorse, and the longest
    /// of them is the long-poll duration (a hold that ran to its timeout). No held answer: GitLab
    /// answered at once.
    pub fn dispatch(&self) -> (Polling, Dispatch) {
        let median = median(&self.jobs_ms).or_else(|| median(&self.empty_ms));
        let threshold = median.map_or(HELD_MIN_MS, |m| (m * HELD_FACTOR).max(HELD_MIN_MS));
        let (held, quick): (Vec<f64>, Vec<f64>) =
            self.empty_ms.iter().partition(|ms| **ms >= threshold);
        let mut rails: Vec<f64> = self.jobs_ms.iter().chain(&quick).copied().collect();
        rails.sort_by(f64::total_cmp);
        let round_trip = if rails.is_empty() {
            Dist::Constant { ms: 0.0 }
        } else {
            Dist::empirical(rails, None)
        };
        let longest = held
            .iter()
            .copied()
            .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
        match longest {
            Some(ms) => (
                Polling::Long,
                Dispatch {
                    long_poll_ms: ms.round() as u64,
                    round_trip,
                },
            ),
            None => (
                Polling::Interval,
                Dispatch {
                    long_poll_ms: DEFAULT_LONG_POLL_MS,
                    round_trip,
                },
            ),
        }
    }
}

fn median(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timestamp = Timestamp(1_000);

    #[test]
    fn a_new_job_ends_held_requests_empty_and_the_next_request_gets_it() {
        let mut line = Line::default();
        // The first request (no last_update) goes to Rails and learns the version.
        assert_eq!(line.request(Polling::Long, T), Fate::Empty);
        let Fate::Held(hold) = line.request(Polling::Long, T) else {
            panic!("a current last_update is held");
        };
        assert_eq!(
            line.enqueue(JobId(7), Polling::Long, |since| assert_eq!(since, T)),
            Released::Empty(1),
            "the hold ends with a bare 204"
        );
        assert!(!line.time_out(hold), "an ended hold has no timeout left");
        assert_eq!(line.request(Polling::Long, T), Fate::Job(JobId(7)));
        // After a job the runner's version is stale: Rails answers, empty, with the new one.
        assert_eq!(line.request(Polling::Long, T), Fate::Empty);
        assert!(matches!(line.request(Polling::Long, T), Fate::Held(_)));
        assert_eq!(line.cancel(), 1);
    }

    #[test]
    fn holds_time_out_and_interval_polling_never_holds() {
        let mut line = Line::default();
        assert_eq!(line.request(Polling::Long, T), Fate::Empty);
        let Fate::Held(hold) = line.request(Polling::Long, T) else {
            panic!("held");
        };
        assert!(line.time_out(hold));
        assert!(!line.time_out(hold));
        let mut line = Line::default();
        for _ in 0..3 {
            assert_eq!(line.request(Polling::Interval, T), Fate::Empty);
        }
        line.enqueue(JobId(1), Polling::Interval, |_| {});
        assert_eq!(line.request(Polling::Interval, T), Fate::Job(JobId(1)));
        // Push: a waiting request takes the next job at once.
        let mut line = Line::default();
        assert!(matches!(line.request(Polling::Push, T), Fate::Held(_)));
        assert_eq!(
            line.enqueue(JobId(2), Polling::Push, |_| {}),
            Released::Job(JobId(2))
        );
        assert_eq!(
            line.enqueue(JobId(3), Polling::Push, |_| {}),
            Released::Empty(0)
        );
        assert_eq!(line.request(Polling::Push, T), Fate::Job(JobId(3)));
    }

    #[test]
    fn timings_are_learned_from_requests_and_answers() {
        let mut timer = RequestTimer::default();
        let at = |ms: u64| Timestamp(1_000_000 + ms);
        // Rails answers take 4-6 ms; two holds, the longer one ran to the 10 s timeout.
        for (sent, answered, job) in [
            (0, 5, false),
            (3_005, 6_100, false),
            (9_100, 9_104, true),
            (12_104, 12_110, false),
            (15_110, 25_110, false),
        ] {
            timer.sent(0, at(sent));
            timer.answered(0, at(answered), Some(job));
        }
        let (polling, dispatch) = timer.dispatch();
        assert_eq!(polling, Polling::Long);
        assert_eq!(dispatch.long_poll_ms, 10_000);
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1);
        let rt = dispatch.round_trip.sample_ms(&mut rng);
        assert!((4..=6).contains(&rt), "{rt}");

        let mut quick = RequestTimer::default();
        quick.sent(0, at(0));
        quick.answered(0, at(3), Some(false));
        assert_eq!(quick.dispatch().0, Polling::Interval);
    }
}
