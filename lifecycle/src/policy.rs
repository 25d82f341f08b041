//! The numbers that shape a job's way through drover: how long it tries to acknowledge a job, how
//! often it keeps a waiting job alive and stores a running job's trace. Data, so the daemon, the
//! simulator and the tests read the same numbers.

use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Attempts to acknowledge a job at GitLab (the two-phase commit) before giving it back.
    pub accept_attempts: u32,
    /// The wait before the second attempt; it doubles after each failed one (1 s, 2 s, … about
    /// half a minute in all with 6 attempts).
    pub accept_first_wait: Duration,
    /// A job waiting for a machine is kept alive at GitLab this often; the answer tells of a cancel.
    pub keep_alive_every: Duration,
    /// A running job's trace and the executor's position in its output are stored this often.
    /// GitLab only ever gets what is stored, so a restart continues exactly where GitLab is.
    pub persist_every: Duration,
    /// Attempts to learn how to reach a job's machine before it counts as lost: a provider's
    /// passing error (a timeout, a missed heartbeat) must not end a job that still runs.
    pub endpoint_attempts: u32,
    /// The wait before the second attempt; it doubles after each failed one (2 s, 4 s, 8 s).
    pub endpoint_first_wait: Duration,
    /// No wait between two attempts is longer (retries that go on until they succeed, such as
    /// removing a job's containers, settle at this pace).
    pub longest_wait: Duration,
}

impl Policy {
    /// GitLab Runner's numbers, where it has them.
    pub const DEFAULT: Policy = Policy {
        accept_attempts: 6,
        accept_first_wait: Duration::from_secs(1),
        keep_alive_every: Duration::from_secs(30),
        persist_every: Duration::from_secs(1),
        endpoint_attempts: 4,
        endpoint_first_wait: Duration::from_secs(2),
        longest_wait: Duration::from_secs(60),
    };

    /// The wait before accept attempt `attempt` (1-based): none before the first, then
    /// `accept_first_wait`, doubling.
    pub fn accept_wait(&self, attempt: u32) -> Duration {
        self.doubling(self.accept_first_wait, attempt)
    }

    /// The wait before attempt `attempt` (1-based) to reach a job's machine, alike.
    pub fn endpoint_wait(&self, attempt: u32) -> Duration {
        self.doubling(self.endpoint_first_wait, attempt)
    }

    /// None before the first attempt, then `first`, doubling, at most `longest_wait`.
    fn doubling(&self, first: Duration, attempt: u32) -> Duration {
        match attempt {
            0 | 1 => Duration::ZERO,
            n => drover_core::doubling(first, n - 2, self.longest_wait),
        }
    }
}

impl Default for Policy {
    fn default() -> Policy {
        Policy::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_waits_double_and_sum_to_about_half_a_minute() {
        let p = Policy::DEFAULT;
        let waits: Vec<u64> = (1..=p.accept_attempts)
            .map(|a| p.accept_wait(a).as_secs())
            .collect();
        assert_eq!(waits, [0, 1, 2, 4, 8, 16]);
        assert!(
            p.accept_wait(100) >= p.accept_wait(6),
            "saturates, never wraps"
        );
        assert_eq!(
            p.endpoint_wait(40),
            p.longest_wait,
            "settles at the longest wait"
        );
    }
}
