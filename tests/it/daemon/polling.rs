//! Job requests against GitLab's long polling and without it: with Workhorse holding requests,
//! drover keeps one outstanding and asks again at once after a job or a hold's end; a GitLab that
//! answers at once is asked no more often than `check_interval`.

use std::time::Duration;

use drover_gitlab::fake::JobStatus;

use super::harness::*;

fn job_requests(env: &Env) -> Vec<drover_gitlab::fake::RecordedRequest> {
    env.fake
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/jobs/request"))
        .collect()
}

/// `check_interval` is an hour: a drover that paused after any answer would leave the second job
/// waiting far beyond the test's patience. A request is held (outstanding at the fake) before each
/// job is enqueued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_long_polling_the_next_request_goes_at_once() {
    let settings = Settings {
        check_interval: 3600,
        ..Settings::docker()
    };
    let Some(mut env) = Env::new("long_poll_at_once", settings).await else {
        return;
    };
    env.start().await;
    assert!(
        env.fake
            .wait_until(PATIENCE, |f| f.held_requests() == 1)
            .await,
        "drover keeps a request held by the long poll"
    );
    let first = env.enqueue(job("first", &["echo one"]));
    assert_eq!(env.finished(first).await.status, JobStatus::Success);
    // After the job: asked again at once, and held again.
    assert!(
        env.fake
            .wait_until(PATIENCE, |f| f.held_requests() == 1)
            .await,
        "a request is held again after the job, without waiting check_interval"
    );
    let second = env.enqueue(job("second", &["echo two"]));
    let done = env.finished(second).await;
    assert_eq!(done.status, JobStatus::Success, "{}", text(&done));
    // Asking at once never loops: per job, a bare 204 ends the hold, the next request gets the
    // job, one more learns the new queue version and is held; the start takes two, and each
    // 10 s hold that runs out one more.
    let requests = job_requests(&env);
    assert!(
        requests.len() <= 16,
        "{} job requests for two jobs",
        requests.len()
    );
    env.finish().await;
}

/// A GitLab without long polling answers at once: drover waits `check_interval` between requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_long_polling_requests_stay_paced() {
    let settings = Settings {
        check_interval: 1,
        long_poll: Duration::ZERO,
        ..Settings::docker()
    };
    let Some(mut env) = Env::new("interval_polling", settings).await else {
        return;
    };
    env.start().await;
    assert!(
        env.fake
            .wait_until(PATIENCE, |f| f
                .requests()
                .iter()
                .filter(|r| r.path.ends_with("/jobs/request") && r.status.is_some())
                .count()
                >= 5)
            .await,
        "drover keeps asking"
    );
    let requests = job_requests(&env);
    assert!(requests.iter().all(|r| r.status != Some(201)));
    assert_eq!(env.fake.held_requests(), 0, "nothing is held");
    for pair in requests.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        // check_interval after each answer (the core's clock counts whole milliseconds).
        assert!(
            gap >= Duration::from_millis(990),
            "requests {gap:?} apart with check_interval = 1 s"
        );
    }
    // Jobs still flow.
    let id = env.enqueue(job("paced", &["echo paced"]));
    assert_eq!(env.finished(id).await.status, JobStatus::Success);
    env.finish().await;
}
