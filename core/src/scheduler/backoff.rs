//! Backoff policies: how long creation pauses after failures, and between removal attempts.

use std::time::Duration;

use crate::event::CreationFailure;
use crate::time::doubling;

/// Exponential backoff after creation failures, longer for quota and fatal errors.
pub fn creation_backoff(failure: CreationFailure, failures: u32) -> Duration {
    let (base, cap) = match failure {
        CreationFailure::Retryable => (Duration::from_secs(5), Duration::from_secs(300)),
        CreationFailure::Quota => (Duration::from_secs(30), Duration::from_secs(900)),
        CreationFailure::Fatal => (Duration::from_secs(300), Duration::from_secs(1800)),
    };
    doubling(base, failures.saturating_sub(1), cap)
}

/// Backoff between removal attempts: 5 s doubling up to 5 min (GitLab waits a flat 30 s).
pub fn removal_backoff(attempts: u32) -> Duration {
    doubling(
        Duration::from_secs(5),
        attempts.saturating_sub(1),
        Duration::from_secs(300),
    )
}
