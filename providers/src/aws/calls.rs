//! AWS calls with drover's policy: throttling (`Throttling`, `RequestLimitExceeded`, ...) and
//! transient failures back off and retry within a budget; a request AWS refuses as invalid, or
//! an access AWS denies, stops at once with what the operator has to fix. The outcome in the
//! core's terms ([`ProviderErrorKind`]).

use std::future::Future;
use std::time::Duration;

use super::{AwsError, AwsErrorKind};
use crate::{ProviderError, ProviderErrorKind};

/// How long to retry throttled or transient failures, and how the waits grow.
#[derive(Copy, Clone, Debug)]
pub struct RetryPolicy {
    pub first: Duration,
    pub cap: Duration,
    pub budget: Duration,
}

impl RetryPolicy {
    pub const DEFAULT: RetryPolicy = RetryPolicy {
        first: Duration::from_millis(500),
        cap: Duration::from_secs(20),
        budget: Duration::from_secs(120),
    };
}

/// Runs `call` until it succeeds, fails for good, or retrying has used up the budget; returns
/// the last outcome.
pub async fn retrying<T, F, Fut>(policy: RetryPolicy, mut call: F) -> Result<T, AwsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, AwsError>>,
{
    let deadline = tokio::time::Instant::now() + policy.budget;
    let mut attempt = 0;
    loop {
        match call().await {
            Err(e) if matches!(e.kind, AwsErrorKind::Throttled | AwsErrorKind::Other) => {
                let wait = drover_core::doubling(policy.first, attempt, policy.cap);
                if tokio::time::Instant::now() + wait > deadline {
                    return Err(e);
                }
                tracing::debug!(attempt, ?wait, "AWS call failed, retrying: {e}");
                attempt += 1;
                tokio::time::sleep(wait).await;
            }
            other => return other,
        }
    }
}

/// The core's view of an AWS failure on `machine`.
pub fn provider_error(machine: &str, e: AwsError) -> ProviderError {
    let (kind, hint) = match e.kind {
        AwsErrorKind::Throttled => (
            ProviderErrorKind::Retryable,
            " (AWS kept throttling drover's calls; they will be retried later)",
        ),
        AwsErrorKind::Invalid => (
            ProviderErrorKind::Fatal,
            " (fix the group's setup, the region or the IAM policy drover's README lists; \
             retrying will not help)",
        ),
        AwsErrorKind::NotFound => (ProviderErrorKind::NotFound, ""),
        AwsErrorKind::Other => (ProviderErrorKind::Retryable, ""),
    };
    ProviderError::new(machine, kind, format!("{e}{hint}"))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn failure(kind: AwsErrorKind) -> AwsError {
        AwsError {
            group: "g".into(),
            kind,
            message: format!("{kind:?}"),
        }
    }

    const FAST: RetryPolicy = RetryPolicy {
        first: Duration::from_millis(1),
        cap: Duration::from_millis(4),
        budget: Duration::from_secs(5),
    };

    #[tokio::test]
    async fn throttling_is_retried_until_the_call_goes_through() {
        let calls = AtomicU32::new(0);
        let out = retrying(FAST, || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err(failure(AwsErrorKind::Throttled)),
                2 => Err(failure(AwsErrorKind::Other)),
                n => Ok(n),
            }
        })
        .await;
        assert_eq!(out.unwrap(), 3);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn invalid_requests_stop_at_once_and_say_what_to_fix() {
        let calls = AtomicU32::new(0);
        let err = retrying(FAST, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(failure(AwsErrorKind::Invalid))
        })
        .await
        .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 1, "not retried");
        let e = provider_error("m1", err);
        assert_eq!(e.kind, ProviderErrorKind::Fatal);
        assert!(e.message.contains("IAM policy"), "{e}");
    }

    #[tokio::test]
    async fn throttling_past_the_budget_is_retryable_later() {
        let policy = RetryPolicy {
            budget: Duration::from_millis(20),
            ..FAST
        };
        let calls = AtomicU32::new(0);
        let err = retrying(policy, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(failure(AwsErrorKind::Throttled))
        })
        .await
        .unwrap_err();
        assert!(calls.load(Ordering::SeqCst) > 1);
        let e = provider_error("m1", err);
        assert_eq!(e.kind, ProviderErrorKind::Retryable);
        assert!(e.message.contains("throttling"), "{e}");
    }
}
