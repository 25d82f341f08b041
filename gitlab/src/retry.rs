//! GitLab Runner's HTTP-layer retries: 408, 429, 500, 502, 503, 504 and anything ≥ 512 are
//! retried, at most 5 attempts in all. The wait before the next attempt comes from
//! `RateLimit-ResetTime` (RFC 1123), else `Retry-After` (seconds), else exponential backoff from
//! 100 ms to 60 s with jitter. After the last attempt the retriable answer goes to the caller.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::header::HeaderMap;

/// How the client retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included (at least 1).
    pub max_attempts: u32,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Seed of the jitter RNG; `None` seeds from the OS. Tests set it for reproducible waits.
    pub seed: Option<u64>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(60),
            seed: None,
        }
    }
}

/// Whether GitLab Runner retries a response with this status.
pub fn is_retryable(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504) || status >= 512
}

/// The wait a response asks for: `RateLimit-ResetTime` first, then `Retry-After`.
/// A reset time in the past or an unparsable header counts as absent.
pub fn wait_from_headers(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let reset = headers
        .get("ratelimit-resettime")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| chrono::DateTime::parse_from_rfc2822(v.trim()).ok())
        .and_then(|t| SystemTime::from(t).duration_since(now).ok())
        .filter(|d| !d.is_zero());
    reset.or_else(|| retry_after(headers))
}

/// `Retry-After` in whole seconds, if present and positive.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
}

/// A jittered exponential backoff: attempt n waits a random time between `min` and
/// `min × 2ⁿ` (capped at `max`).
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// The next wait, drawing jitter from `rng`: between `min` and the next ceiling.
    pub fn next(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = self.next_ceiling();
        if ceiling <= self.min {
            return ceiling;
        }
        let span = (ceiling - self.min).as_secs_f64();
        self.min + Duration::from_secs_f64(span * rng.random::<f64>())
    }

    /// The next wait without jitter (its ceiling): `min × 2ⁿ`, capped at `max`.
    pub fn next_ceiling(&mut self) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(31));
        self.attempt = self.attempt.saturating_add(1);
        self.min.saturating_mul(factor).min(self.max)
    }
}

/// The RNG behind jitter, shared by a client's calls.
#[derive(Debug)]
pub(crate) struct Jitter(Mutex<StdRng>);

impl Jitter {
    pub(crate) fn new(seed: Option<u64>) -> Self {
        Jitter(Mutex::new(match seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_os_rng(),
        }))
    }

    pub(crate) fn next(&self, backoff: &mut Backoff) -> Duration {
        // A poisoned lock only means another call panicked mid-draw; the RNG is still usable.
        let mut rng = self.0.lock().unwrap_or_else(|e| e.into_inner());
        backoff.next(&mut *rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retryable_statuses_match_gitlab_runner() {
        for s in [408, 429, 500, 502, 503, 504, 512, 599] {
            assert!(is_retryable(s), "{s}");
        }
        for s in [
            200, 201, 204, 400, 403, 404, 409, 412, 416, 422, 501, 505, 511,
        ] {
            assert!(!is_retryable(s), "{s}");
        }
    }

    #[test]
    fn reset_time_wins_over_retry_after() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_450); // 07:27:30 GMT
        let mut h = HeaderMap::new();
        h.insert(
            "RateLimit-ResetTime",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        h.insert("Retry-After", HeaderValue::from_static("60"));
        assert_eq!(wait_from_headers(&h, now), Some(Duration::from_secs(30)));
        // In the past: fall back to Retry-After.
        let later = now + Duration::from_secs(600);
        assert_eq!(wait_from_headers(&h, later), Some(Duration::from_secs(60)));
        h.insert("Retry-After", HeaderValue::from_static("soon"));
        assert_eq!(wait_from_headers(&h, later), None);
    }

    #[test]
    fn backoff_grows_stays_in_bounds_and_is_reproducible() {
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(60));
            (0..14).map(|_| b.next(&mut rng)).collect::<Vec<_>>()
        };
        let a = draw(7);
        assert_eq!(a, draw(7));
        assert_eq!(a[0], Duration::from_millis(100));
        for (n, d) in a.iter().enumerate() {
            let ceiling =
                (Duration::from_millis(100) * 2u32.pow(n as u32)).min(Duration::from_secs(60));
            assert!(
                *d >= Duration::from_millis(100) && *d <= ceiling,
                "attempt {n}: {d:?}"
            );
        }
        assert!(
            a[13] > Duration::from_secs(1),
            "backoff should have grown: {a:?}"
        );
    }
}
