//! Every scripted fault: no panic, no lost update, no duplicate final update.

use std::time::Duration;

use drover_gitlab::fake::{FakeGitlab, Fault, JobStatus, JobTemplate, Route};
use drover_gitlab::trace::{
    FinalOutcome, JobResult, RemoteState, SharedTrace, TickOutcome, TraceUploader,
};
use drover_gitlab::{Client, ClientConfig, RequestOutcome, Timeouts};

use crate::common::*;

/// A running job with some trace written, ready for faults.
async fn running_job(fake: &FakeGitlab, client: &Client) -> (u64, TraceUploader, SharedTrace) {
    let token = verified_runner(fake, client, false).await;
    let id = fake.enqueue_job(JobTemplate::new("faulty"));
    let job = take_job(client, &token, false).await;
    assert_eq!(
        client.accept_job(&(&job).into(), &info(false)).await.kind,
        drover_gitlab::UpdateKind::Ok
    );
    let (uploader, trace) = uploader(client, &job, false);
    trace.write(b"first line\n");
    (id, uploader, trace)
}

/// The job ended in GitLab with exactly this side's trace and one accepted final update.
fn assert_delivered(fake: &FakeGitlab, id: u64, trace: &SharedTrace, status: JobStatus) {
    let view = fake.job(id).unwrap();
    assert_eq!(view.status, status);
    assert_eq!(
        view.trace,
        trace.lock().bytes(),
        "no lost or duplicated trace bytes"
    );
    assert_eq!(
        view.final_updates_accepted, 1,
        "exactly one accepted final update"
    );
    assert_no_violations(fake);
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_server_errors_is_retried_within_the_call() {
    let fake = fake().await;
    let client = client(fake.url());
    let (id, mut uploader, trace) = running_job(&fake, &client).await;
    fake.inject(Fault::status(Route::TracePatch, 503, 3));
    assert_eq!(uploader.tick().await, TickOutcome::Sent);
    let patches = requests_to(&fake, "PATCH", "/trace");
    assert_eq!(
        patches
            .iter()
            .map(|r| r.status.unwrap())
            .collect::<Vec<_>>(),
        [503, 503, 503, 202]
    );
    assert!(
        patches
            .iter()
            .all(|r| r.header("content-range") == patches[0].header("content-range"))
    );
    // Exponential backoff between attempts (100 ms, then up to 200 and 400 ms with jitter).
    assert!(patches[3].at - patches[0].at >= Duration::from_millis(300));
    // Same correlation id for the retries of one call.
    assert!(
        patches
            .iter()
            .all(|r| r.header("x-request-id") == patches[0].header("x-request-id"))
    );

    // Longer than the 5 attempts: the final update fails as a whole and is retried with backoff.
    fake.inject(Fault::status(Route::FinalUpdate, 500, 7));
    trace.write(b"done\n");
    assert_eq!(
        uploader.finish(JobResult::Success).await,
        FinalOutcome::Accepted
    );
    let finals = final_puts(&fake, id);
    assert_eq!(
        finals.iter().map(|r| r.status.unwrap()).collect::<Vec<_>>(),
        [500, 500, 500, 500, 500, 500, 500, 200]
    );
    assert_delivered(&fake, id, &trace, JobStatus::Success);
}

#[tokio::test(start_paused = true)]
async fn too_many_requests_waits_for_retry_after() {
    let fake = fake().await;
    let client = client(fake.url());
    let token = verified_runner(&fake, &client, false).await;
    let id = fake.enqueue_job(JobTemplate::new("after-429"));
    fake.inject(Fault::rate_limited(Route::JobRequest, 60, 1));
    match client.request_job(&job_request(&token, false, "")).await {
        RequestOutcome::Job(job) => assert_eq!(job.id, id),
        other => panic!("the retry after 60 s should get the job: {other:?}"),
    }
    let requests = requests_to(&fake, "POST", "/jobs/request");
    assert_eq!(
        requests
            .iter()
            .map(|r| r.status.unwrap())
            .collect::<Vec<_>>(),
        [429, 201]
    );
    let waited = requests[1].at - requests[0].at;
    assert!(
        waited >= Duration::from_secs(60) && waited < Duration::from_secs(61),
        "{waited:?}"
    );

    // RateLimit-ResetTime wins over Retry-After.
    fake.inject(Fault::Status {
        route: Route::JobRequest,
        status: 429,
        times: 1,
        retry_after: Some(600),
        reset_in: Some(Duration::from_secs(30)),
    });
    let _ = client.request_job(&job_request(&token, false, "")).await;
    let requests = requests_to(&fake, "POST", "/jobs/request");
    let waited = requests[3].at - requests[2].at;
    assert!(
        waited >= Duration::from_secs(28) && waited <= Duration::from_secs(31),
        "{waited:?}"
    );
    assert_no_violations(&fake);
}

#[tokio::test(start_paused = true)]
async fn a_429_that_outlasts_the_attempts_reports_retry_after() {
    let fake = fake().await;
    let client = client(fake.url());
    let token = verified_runner(&fake, &client, false).await;
    fake.inject(Fault::rate_limited(Route::JobRequest, 45, 5));
    match client.request_job(&job_request(&token, false, "")).await {
        RequestOutcome::Failed {
            status: Some(429),
            retry_after: Some(d),
            unhealthy: false,
            ..
        } => {
            assert_eq!(d, Duration::from_secs(45))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        requests_to(&fake, "POST", "/jobs/request").len(),
        5,
        "at most 5 attempts"
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_response_times_out_and_the_next_tick_resends() {
    let fake = fake().await;
    let mut config = ClientConfig::new(fake.url(), identity());
    config.timeouts = Timeouts {
        request: Duration::from_secs(5),
        ..Timeouts::default()
    };
    let client = Client::new(config).unwrap();
    let (id, mut uploader, trace) = running_job(&fake, &client).await;

    fake.inject(Fault::Delay {
        route: Route::TracePatch,
        delay: Duration::from_secs(600),
        times: 1,
    });
    assert_eq!(uploader.tick().await, TickOutcome::Sent);
    assert_eq!(
        uploader.acked_offset(),
        0,
        "the timed-out patch is not acknowledged"
    );
    assert_eq!(uploader.tick().await, TickOutcome::Sent);
    assert_eq!(uploader.acked_offset(), trace.lock().len());

    // A slow final update: given up on, then retried; never accepted twice.
    fake.inject(Fault::Delay {
        route: Route::FinalUpdate,
        delay: Duration::from_secs(600),
        times: 1,
    });
    trace.write(b"last\n");
    assert_eq!(
        uploader.finish(JobResult::Success).await,
        FinalOutcome::Accepted
    );
    // Let the abandoned requests' delays run out: they must not be processed late.
    tokio::time::sleep(Duration::from_secs(700)).await;
    let patches = requests_to(&fake, "PATCH", "/trace");
    assert_eq!(
        patches[0].status, None,
        "the abandoned patch was never answered"
    );
    assert_delivered(&fake, id, &trace, JobStatus::Success);
}

#[tokio::test(start_paused = true)]
async fn dropped_connections_lose_nothing() {
    let fake = fake().await;
    let client = client(fake.url());
    let (id, mut uploader, trace) = running_job(&fake, &client).await;

    fake.inject(Fault::Drop {
        route: Route::TracePatch,
        times: 1,
    });
    assert_eq!(uploader.tick().await, TickOutcome::Sent);
    assert_eq!(uploader.acked_offset(), 0);
    assert_eq!(uploader.tick().await, TickOutcome::Sent);
    assert_eq!(uploader.acked_offset(), trace.lock().len());

    fake.inject(Fault::Drop {
        route: Route::FinalUpdate,
        times: 2,
    });
    trace.write(b"more\n");
    assert_eq!(
        uploader.finish(JobResult::Success).await,
        FinalOutcome::Accepted
    );
    let finals = final_puts(&fake, id);
    assert_eq!(
        finals.iter().map(|r| r.status).collect::<Vec<_>>(),
        [None, None, Some(200)]
    );
    assert_delivered(&fake, id, &trace, JobStatus::Success);

    // A dropped job request is an unhealthy failure, as any client-side error.
    let token = verified_runner(&fake, &client, false).await;
    fake.inject(Fault::Drop {
        route: Route::JobRequest,
        times: 1,
    });
    match client.request_job(&job_request(&token, false, "")).await {
        RequestOutcome::Failed {
            status: None,
            unhealthy: true,
            message,
            ..
        } => {
            assert!(message.contains("/api/v4/jobs/request"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_job_canceled_mid_run_stops_the_uploads() {
    let fake = fake().await;
    let client = client(fake.url());
    let token = verified_runner(&fake, &client, true).await;
    let id = fake.enqueue_job(JobTemplate::new("canceled").cancel_after_patches(2));
    let job = take_job(&client, &token, true).await;
    client.accept_job(&(&job).into(), &info(true)).await;
    let (mut uploader, trace) = uploader(&client, &job, true);
    let remote = uploader.remote();
    trace.write(b"one\n");
    assert_eq!(uploader.tick().await, TickOutcome::Sent);
    assert_eq!(*remote.borrow(), RemoteState::Running);
    trace.write(b"two\n");
    assert_eq!(uploader.tick().await, TickOutcome::Sent);
    assert_eq!(*remote.borrow(), RemoteState::CancelRequested);
    trace.write(b"after_script\n");
    assert_eq!(
        uploader.finish(JobResult::Canceled).await,
        FinalOutcome::Accepted
    );
    assert_delivered(&fake, id, &trace, JobStatus::Canceled);
}

#[tokio::test(start_paused = true)]
async fn a_202_on_the_final_update_is_waited_out_and_redone() {
    let fake = fake().await;
    let client = client(fake.url());
    let (id, mut uploader, trace) = running_job(&fake, &client).await;
    fake.inject(Fault::FinalNotCompleted { times: 1 });
    assert_eq!(
        uploader.finish(JobResult::Success).await,
        FinalOutcome::Accepted
    );
    let finals = final_puts(&fake, id);
    assert_eq!(
        finals.iter().map(|r| r.status.unwrap()).collect::<Vec<_>>(),
        [202, 200]
    );
    assert!(
        finals[1].at - finals[0].at >= Duration::from_secs(1),
        "waited the interval GitLab asked for"
    );
    assert_delivered(&fake, id, &trace, JobStatus::Success);
}

#[tokio::test(start_paused = true)]
async fn a_412_on_the_final_update_resends_the_whole_trace() {
    let fake = fake().await;
    let client = client(fake.url());
    let (id, mut uploader, trace) = running_job(&fake, &client).await;
    assert_eq!(uploader.tick().await, TickOutcome::Sent);
    fake.inject(Fault::TraceInvalid { times: 1 });
    trace.write(b"tail\n");
    assert_eq!(
        uploader.finish(JobResult::Success).await,
        FinalOutcome::Accepted
    );
    let patches = requests_to(&fake, "PATCH", "/trace");
    assert!(
        patches
            .last()
            .unwrap()
            .header("content-range")
            .unwrap()
            .starts_with("0-"),
        "resent from 0"
    );
    assert_delivered(&fake, id, &trace, JobStatus::Success);
}

#[tokio::test(start_paused = true)]
async fn a_dead_server_makes_the_final_update_give_up_within_bounds() {
    let fake = fake().await;
    let client = client(fake.url());
    let (id, mut uploader, _trace) = running_job(&fake, &client).await;
    assert_eq!(uploader.tick().await, TickOutcome::Sent);
    fake.inject(Fault::status(Route::FinalUpdate, 502, 1000));
    let outcome = uploader.finish(JobResult::Success).await;
    assert!(
        matches!(&outcome, FinalOutcome::GaveUp(e) if e.contains("502")),
        "{outcome:?}"
    );
    // 11 sequences (1 + 10 retries) of 5 attempts each.
    assert_eq!(final_puts(&fake, id).len(), 55);
    assert_eq!(fake.job(id).unwrap().status, JobStatus::Running);
}
