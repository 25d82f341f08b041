//! One retry loop for the calls a job task repeats after a passing error (reaching its machine,
//! removing its containers): tries at the job lifecycle policy's endpoint backoff.

use std::future::Future;

use drover_lifecycle::Policy;

/// Calls `call` until it succeeds, `settled` says its error is final, or `limit` tries (when
/// given) are spent, waiting between tries as the policy's endpoint backoff says (settling at its
/// longest wait); `failed` hears of each error that is tried again. Returns the last result and
/// the number of tries.
pub async fn at_endpoint_backoff<T, E, F, Fut>(
    policy: &Policy,
    limit: Option<u32>,
    mut call: F,
    settled: impl Fn(&E) -> bool,
    mut failed: impl FnMut(u32, &E),
) -> (Result<T, E>, u32)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Ok(value) => return (Ok(value), attempt),
            Err(e) if settled(&e) || limit.is_some_and(|l| attempt >= l) => {
                return (Err(e), attempt);
            }
            Err(e) => {
                failed(attempt, &e);
                attempt += 1;
                tokio::time::sleep(policy.endpoint_wait(attempt)).await;
            }
        }
    }
}
