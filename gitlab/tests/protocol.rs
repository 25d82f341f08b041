//! The client through the whole runner protocol against the fake.

use std::time::Duration;

use drover_gitlab::api::{
    FeaturesInfo, RegisterRunnerRequest, UpdateJobRequest, VerifyRunnerRequest,
};
use drover_gitlab::fake::{FakeGitlab, FakeOptions, JobStatus, JobTemplate};
use drover_gitlab::trace::{
    FinalOutcome, JobResult, RemoteState, SharedTrace, TickOutcome, TraceBuffer, TraceOptions,
    TraceUploader, UploaderConfig,
};
use drover_gitlab::{Error, JobCredentials, RequestOutcome, Secret, UpdateKind};

use crate::common::*;

const SECRET: &str = "s3cr3t-Pa55w0rd";

#[tokio::test(start_paused = true)]
async fn register_verify_request_accept_trace_with_rewind_and_finish() {
    let fake = fake().await;
    let client = client(fake.url());
    let token = verified_runner(&fake, &client, false).await;
    let runner = fake.runner(token.expose()).expect("runner");
    assert_eq!(runner.managers.len(), 1);
    assert_eq!(runner.managers[0].system_id, SYSTEM_ID);
    assert!(runner.managers[0].features.two_phase_job_commit);

    let id = fake.enqueue_job(JobTemplate::new("test:unit").masked_variable("DB_PASSWORD", SECRET));
    let job = take_job(&client, &token, false).await;
    assert_eq!(job.id, id);
    assert_eq!(job.variable("DB_PASSWORD"), Some(SECRET));
    assert_eq!(job.variable("CI_JOB_ID"), Some(id.to_string().as_str()));
    assert!(
        job.git_info.repo_url.contains(job.token.expose()),
        "repo URL carries the job token"
    );

    // Two-phase commit: pending until accepted.
    let view = fake.job(id).unwrap();
    assert_eq!(
        (view.status, view.assigned, view.accepted),
        (JobStatus::Pending, true, false)
    );
    let accepted = client.accept_job(&(&job).into(), &info(false)).await;
    assert_eq!(accepted.kind, UpdateKind::Ok);
    assert_eq!(fake.job(id).unwrap().status, JobStatus::Running);

    let (mut uploader, trace) = uploader(&client, &job, false);
    trace.write(b"$ echo password is s3cr3t-");
    trace.write(b"Pa55w0rd and token ");
    trace.write(job.token.expose().as_bytes());
    trace.write(b"\n");
    assert_eq!(uploader.tick().await, TickOutcome::Sent);
    let first = uploader.acked_offset();
    assert!(first > 0);
    assert_eq!(fake.job(id).unwrap().trace.len() as u64, first);

    // GitLab loses the tail of what it had: the next patch gets 416 and the uploader rewinds.
    fake.truncate_trace(id, 10);
    trace.write(b"second line\n");
    assert_eq!(uploader.tick().await, TickOutcome::Sent);
    assert_eq!(uploader.acked_offset(), 10, "rewound to the server's size");
    assert_eq!(uploader.tick().await, TickOutcome::Sent);

    trace.write(b"Job succeeded\n");
    assert_eq!(
        uploader.finish(JobResult::Success).await,
        FinalOutcome::Accepted
    );

    let view = fake.job(id).unwrap();
    let stored = trace.lock();
    assert_eq!(view.status, JobStatus::Success);
    assert_eq!(
        view.trace,
        stored.bytes(),
        "GitLab holds exactly the runner's trace"
    );
    assert_eq!(view.trace_checksum(), stored.checksum());
    let text = String::from_utf8(view.trace.clone()).unwrap();
    assert!(!text.contains(SECRET), "masked variable leaked: {text}");
    assert!(
        !text.contains(job.token.expose()),
        "job token leaked: {text}"
    );
    assert!(
        text.contains("password is [MASKED] and token glcbt-[MASKED]"),
        "{text}"
    );

    let patches = requests_to(&fake, "PATCH", "/trace");
    let ranges: Vec<&str> = patches
        .iter()
        .map(|r| r.header("content-range").unwrap())
        .collect();
    assert_eq!(
        patches.iter().filter(|r| r.status == Some(416)).count(),
        1,
        "{ranges:?}"
    );
    assert!(patches.iter().all(|r| r.query == "debug_trace=false"));
    assert!(
        patches
            .iter()
            .all(|r| r.header("job-token") == Some(job.token.expose()))
    );

    let updates = view.updates;
    assert_eq!(
        updates.first().map(|u| (u.state.as_str(), u.bytesize)),
        Some(("running", None))
    );
    assert_eq!(
        updates.last().map(|u| (u.state.as_str(), u.status)),
        Some(("success", 200))
    );
    assert_eq!(final_puts(&fake, id).len(), 1);
    let last = final_puts(&fake, id).pop().unwrap().json().unwrap();
    assert!(
        last.get("exit_code").is_none() && last.get("failure_reason").is_none(),
        "{last}"
    );
    assert_eq!(last["output"]["bytesize"], stored.len());
    assert_no_violations(&fake);
}

#[tokio::test]
async fn every_request_carries_the_expected_headers() {
    let fake = fake().await;
    let client = client(fake.url());
    let token = verified_runner(&fake, &client, false).await;
    let _ = client.request_job(&job_request(&token, false, "")).await;
    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    for r in &requests {
        assert!(
            r.header("user-agent")
                .unwrap()
                .starts_with("drover 0.1.0 (test; rust; "),
            "{r:?}"
        );
        assert_eq!(r.header("runner-token"), Some(token.expose()));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("accept"), Some("application/json"));
        assert_eq!(r.header("x-request-id").map(str::len), Some(32));
    }
    assert_ne!(
        requests[0].header("x-request-id"),
        requests[1].header("x-request-id")
    );
    let body = requests[1].json().unwrap();
    assert_eq!(body["info"]["name"], "drover");
    assert_eq!(body["info"]["executor"], "docker");
    assert_eq!(body["info"]["features"]["two_phase_job_commit"], true);
    assert_eq!(
        body["info"]["features"]["cancel_gracefully"], false,
        "never claimed unless asked"
    );
    assert_eq!(body["info"]["features"]["artifacts"], false);
    assert_eq!(body["info"]["config"]["gpus"], "");
    assert_eq!(
        body["token"],
        token.expose(),
        "the token is in the body too"
    );
    assert!(
        body.get("last_update").is_none(),
        "empty values are omitted"
    );
    assert_no_violations(&fake);
}

#[tokio::test]
async fn legacy_registration_and_unregistration() {
    let fake = fake().await;
    let client = client(fake.url());
    let request = RegisterRunnerRequest {
        description: "docker-runner-01".into(),
        tag_list: "docker,linux".into(),
        run_untagged: Some(false),
        locked: Some(true),
        maximum_timeout: 7200,
        info: identity().info("", "", FeaturesInfo::client_protocol()),
        token: Secret::new(fake.registration_token()),
        ..Default::default()
    };
    let registered = client.register_runner(&request).await.expect("register");
    assert!(registered.token.expose().starts_with("glrtr-"));
    let runner = fake.runner(registered.token.expose()).unwrap();
    assert_eq!((runner.id, runner.registered), (registered.id, true));
    assert_eq!(runner.tags, ["docker", "linux"]);
    assert_eq!(
        (runner.locked, runner.run_untagged, runner.maximum_timeout),
        (Some(true), Some(false), 7200)
    );

    client
        .unregister_runner(&registered.token)
        .await
        .expect("unregister");
    assert!(fake.runner(registered.token.expose()).is_none());
    let again = client
        .unregister_runner(&registered.token)
        .await
        .unwrap_err();
    assert!(matches!(again, Error::Forbidden { .. }), "{again}");

    let bad = RegisterRunnerRequest {
        token: Secret::new("GR1348941wrong"),
        ..request.clone()
    };
    let err = client.register_runner(&bad).await.unwrap_err();
    assert!(
        matches!(err, Error::Forbidden { .. }) && err.to_string().contains("registration token"),
        "{err}"
    );

    fake.set_registration_enabled(false);
    let err = client.register_runner(&request).await.unwrap_err();
    assert!(matches!(err, Error::RegistrationDisabled { .. }), "{err}");
    assert!(
        err.to_string().contains("glrt-"),
        "tells the operator what to do: {err}"
    );
    assert_no_violations(&fake);
}

#[tokio::test]
async fn managers_are_unregistered_per_system_id() {
    let fake = fake().await;
    let client = client(fake.url());
    let token = verified_runner(&fake, &client, false).await;
    client
        .unregister_manager(&token, SYSTEM_ID)
        .await
        .expect("unregister manager");
    let runner = fake
        .runner(token.expose())
        .expect("the runner itself stays");
    assert!(runner.managers.is_empty());
    let err = client
        .unregister_manager(&token, SYSTEM_ID)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");

    fake.delete_runner(token.expose());
    let err = client
        .verify_runner(&VerifyRunnerRequest {
            info: None,
            token: token.clone(),
            system_id: SYSTEM_ID.into(),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Forbidden { .. }), "{err}");

    let reset_token = Secret::new(fake.create_runner_token());
    let reset = client.reset_token(&reset_token).await.expect("reset");
    assert!(reset.token.expose().starts_with("glrt-") && reset.token != reset_token);
    assert!(
        fake.runner(reset.token.expose()).is_some() && fake.runner(reset_token.expose()).is_none()
    );
    assert_no_violations(&fake);
}

#[tokio::test]
async fn long_poll_holds_until_the_queue_changes() {
    let fake = FakeGitlab::start(FakeOptions::default()).await.unwrap(); // 50 s holds
    let client = client(fake.url());
    let token = verified_runner(&fake, &client, false).await;

    let RequestOutcome::NoJob {
        last_update: Some(version),
        long_polling: true,
    } = client.request_job(&job_request(&token, false, "")).await
    else {
        panic!("the first request goes to Rails and gets the queue version");
    };
    assert_eq!(version.len(), 32);

    let held = {
        let (client, request) = (client.clone(), job_request(&token, false, &version));
        tokio::spawn(async move { client.request_job(&request).await })
    };
    assert!(
        fake.wait_until(Duration::from_secs(10), |f| f.requests().len() == 3)
            .await
    );
    assert!(!held.is_finished(), "a current last_update is held");
    let id = fake.enqueue_job(JobTemplate::new("build"));
    // Workhorse answers a bare 204 when the queue changes; the runner asks again at once.
    match held.await.unwrap() {
        RequestOutcome::NoJob {
            last_update: None,
            long_polling: true,
        } => {}
        other => panic!("expected a bare 204, got {other:?}"),
    }
    match client
        .request_job(&job_request(&token, false, &version))
        .await
    {
        RequestOutcome::Job(job) => assert_eq!(job.id, id),
        other => panic!("expected the job, got {other:?}"),
    }
    assert_no_violations(&fake);
}

#[tokio::test(start_paused = true)]
async fn long_poll_times_out_with_a_bare_204() {
    let fake = FakeGitlab::start(FakeOptions {
        long_poll: Duration::from_secs(50),
        ..Default::default()
    })
    .await
    .unwrap();
    let client = client(fake.url());
    let token = verified_runner(&fake, &client, false).await;
    let RequestOutcome::NoJob {
        last_update: Some(version),
        long_polling: true,
    } = client.request_job(&job_request(&token, false, "")).await
    else {
        panic!("expected a queue version");
    };
    let start = tokio::time::Instant::now();
    let outcome = client
        .request_job(&job_request(&token, false, &version))
        .await;
    assert!(
        matches!(
            outcome,
            RequestOutcome::NoJob {
                last_update: None,
                long_polling: true
            }
        ),
        "{outcome:?}"
    );
    assert!(
        start.elapsed() >= Duration::from_secs(50),
        "held for the poll duration: {:?}",
        start.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn time_in_queue_is_each_jobs_own_wait_on_the_fakes_clock() {
    let fake = fake().await;
    let client = client(fake.url());
    let token = verified_runner(&fake, &client, false).await;
    let first = fake.enqueue_job(JobTemplate::new("first"));
    tokio::time::advance(Duration::from_millis(3_000)).await;
    let second = fake.enqueue_job(JobTemplate::new("second"));
    tokio::time::advance(Duration::from_millis(1_500)).await;
    let pinned = fake.enqueue_job(JobTemplate::new("pinned").time_in_queue(0.25));

    let a = take_job(&client, &token, false).await;
    let b = take_job(&client, &token, false).await;
    let c = take_job(&client, &token, false).await;
    assert_eq!((a.id, b.id, c.id), (first, second, pinned));
    // The clock is paused: only the advances (and no more than a request's worth) passed.
    let waited = a.job_info.time_in_queue_seconds;
    assert!((4.5..4.6).contains(&waited), "first waited {waited} s");
    let waited = b.job_info.time_in_queue_seconds;
    assert!((1.5..1.6).contains(&waited), "second waited {waited} s");
    assert_eq!(
        c.job_info.time_in_queue_seconds, 0.25,
        "a pinned value is served as is"
    );
    // The fake's own records agree with what it served.
    let view = fake.job(first).unwrap();
    let picked = view.picked_at.unwrap().duration_since(view.enqueued_at);
    assert_eq!(picked.as_secs_f64(), a.job_info.time_in_queue_seconds);
    assert!(
        view.started_at.is_none(),
        "two-phase commit: not running before the acknowledgement"
    );
    assert_no_violations(&fake);
}

#[tokio::test]
async fn long_poll_is_ended_only_by_a_job_the_runner_could_take() {
    let fake = FakeGitlab::start(FakeOptions::default()).await.unwrap(); // 50 s holds
    let client = client(fake.url());
    let token = verified_runner(&fake, &client, false).await;
    let other = fake.create_runner_token();
    let RequestOutcome::NoJob {
        last_update: Some(version),
        long_polling: true,
    } = client.request_job(&job_request(&token, false, "")).await
    else {
        panic!("the first request goes to Rails and gets the queue version");
    };
    let held = {
        let (client, request) = (client.clone(), job_request(&token, false, &version));
        tokio::spawn(async move { client.request_job(&request).await })
    };
    assert!(
        fake.wait_until(Duration::from_secs(10), |f| f.held_requests() == 1)
            .await
    );
    // A job for another runner leaves this runner's queue version alone: a second request with
    // the same version is held too.
    fake.enqueue_job(JobTemplate::new("elsewhere").for_runner(&other));
    let second = {
        let (client, request) = (client.clone(), job_request(&token, false, &version));
        tokio::spawn(async move { client.request_job(&request).await })
    };
    assert!(
        fake.wait_until(Duration::from_secs(10), |f| f.held_requests() == 2)
            .await
    );
    let mine = fake.enqueue_job(JobTemplate::new("mine").for_runner(token.expose()));
    for held in [held, second] {
        match held.await.unwrap() {
            RequestOutcome::NoJob {
                last_update: None,
                long_polling: true,
            } => {}
            other => panic!("expected a bare 204, got {other:?}"),
        }
    }
    assert_eq!(fake.held_requests(), 0);
    // Only "mine" bumped the version, so one more request with the old version reaches Rails.
    match client
        .request_job(&job_request(&token, false, &version))
        .await
    {
        RequestOutcome::Job(job) => assert_eq!(job.id, mine),
        other => panic!("expected the job, got {other:?}"),
    }
    assert_no_violations(&fake);
}

#[tokio::test]
async fn without_two_phase_commit_a_job_runs_at_once_and_paused_runners_get_nothing() {
    let fake = fake().await;
    let client = client(fake.url());
    let token = Secret::new(fake.create_runner_token());
    let mut request = job_request(&token, false, "");
    request.info.features.two_phase_job_commit = false;
    let id = fake.enqueue_job(JobTemplate::new("build"));
    fake.set_runner_paused(token.expose(), true);
    assert!(matches!(
        client.request_job(&request).await,
        RequestOutcome::NoJob {
            last_update: Some(_),
            long_polling: false,
        }
    ));
    fake.set_runner_paused(token.expose(), false);
    assert!(matches!(
        client.request_job(&request).await,
        RequestOutcome::Job(_)
    ));
    assert_eq!(fake.job(id).unwrap().status, JobStatus::Running);

    let unknown = job_request(&Secret::new("glrt-unknown"), false, "");
    match client.request_job(&unknown).await {
        RequestOutcome::Failed {
            status: Some(403),
            unhealthy: true,
            ..
        } => {}
        other => panic!("a bad token makes the runner unhealthy: {other:?}"),
    }
    assert_no_violations(&fake);
}

#[tokio::test(start_paused = true)]
async fn graceful_cancel_is_signalled_and_reported_as_canceled() {
    let fake = fake().await;
    let client = client(fake.url());
    let token = verified_runner(&fake, &client, true).await;
    let id = fake.enqueue_job(JobTemplate::new("deploy"));
    let job = take_job(&client, &token, true).await;
    assert_eq!(
        client.accept_job(&(&job).into(), &info(true)).await.kind,
        UpdateKind::Ok
    );
    let (mut uploader, trace) = uploader(&client, &job, true);
    let remote = uploader.remote();

    trace.write(b"deploying\n");
    assert_eq!(uploader.tick().await, TickOutcome::Sent);
    fake.cancel_job(id);
    assert_eq!(fake.job(id).unwrap().status, JobStatus::Canceling);
    trace.write(b"still going\n");
    assert_eq!(uploader.tick().await, TickOutcome::Sent);
    assert_eq!(*remote.borrow(), RemoteState::CancelRequested);

    trace.write(b"after_script ran\n");
    assert_eq!(
        uploader.finish(JobResult::Canceled).await,
        FinalOutcome::Accepted
    );
    let view = fake.job(id).unwrap();
    assert_eq!(view.status, JobStatus::Canceled);
    assert_eq!(
        view.failure_reason.as_deref(),
        Some("unknown_failure"),
        "job_canceled is mapped"
    );
    assert!(String::from_utf8_lossy(&view.trace).contains("after_script ran"));
    assert_no_violations(&fake);
}

#[tokio::test(start_paused = true)]
async fn hard_cancel_aborts_the_job() {
    let fake = fake().await;
    let client = client(fake.url());
    let token = verified_runner(&fake, &client, false).await;
    let id = fake.enqueue_job(JobTemplate::new("deploy").cancel_after_patches(1));
    let job = take_job(&client, &token, false).await;
    client.accept_job(&(&job).into(), &info(false)).await;
    let (mut uploader, trace) = uploader(&client, &job, false);

    trace.write(b"line 1\n");
    // The patch is appended, then the user cancels: its 202 already says canceled.
    assert_eq!(
        uploader.tick().await,
        TickOutcome::Stopped(RemoteState::Aborted)
    );
    assert_eq!(fake.job(id).unwrap().status, JobStatus::Canceled);
    trace.write(b"line 2\n");
    assert_eq!(
        uploader.tick().await,
        TickOutcome::Stopped(RemoteState::Aborted),
        "no more sends"
    );
    assert_eq!(
        uploader.finish(JobResult::Canceled).await,
        FinalOutcome::Aborted
    );
    assert_eq!(
        requests_to(&fake, "PATCH", "/trace").len(),
        2,
        "the final flush learns of the abort once"
    );
    assert_no_violations(&fake);
}

#[tokio::test(start_paused = true)]
async fn keep_alive_after_thirty_seconds_without_sends() {
    let fake = fake().await;
    let client = client(fake.url());
    let token = verified_runner(&fake, &client, false).await;
    let id = fake.enqueue_job(JobTemplate::new("slow"));
    let job = take_job(&client, &token, false).await;
    client.accept_job(&(&job).into(), &info(false)).await;
    let (mut uploader, trace) = uploader(&client, &job, false);
    trace.write(b"started\n");
    assert_eq!(uploader.tick().await, TickOutcome::Sent);
    assert_eq!(
        uploader.tick().await,
        TickOutcome::Idle,
        "nothing new, keep-alive not due"
    );
    tokio::time::advance(Duration::from_secs(31)).await;
    assert_eq!(uploader.tick().await, TickOutcome::Sent);
    let keep_alive = fake.job(id).unwrap().updates.pop().unwrap();
    assert_eq!(keep_alive.state, "running");
    assert_eq!(keep_alive.bytesize, Some(8));
    assert_eq!(keep_alive.checksum, Some(trace.lock().checksum()));
    assert_eq!(
        uploader.tick().await,
        TickOutcome::Idle,
        "a keep-alive counts as a send"
    );
    assert_no_violations(&fake);
}

#[tokio::test(start_paused = true)]
async fn the_servers_update_interval_is_honoured_and_capped() {
    let fake = FakeGitlab::start(FakeOptions {
        long_poll: Duration::ZERO,
        trace_update_interval: 7,
        ..Default::default()
    })
    .await
    .unwrap();
    let client = client(fake.url());
    let token = verified_runner(&fake, &client, false).await;
    fake.enqueue_job(JobTemplate::new("a"));
    let job = take_job(&client, &token, false).await;
    client.accept_job(&(&job).into(), &info(false)).await;
    let (mut first, trace) = uploader(&client, &job, false);
    assert_eq!(first.interval(), Duration::from_secs(3));
    trace.write(b"x\n");
    first.tick().await;
    assert_eq!(first.interval(), Duration::from_secs(7));

    let fake = FakeGitlab::start(FakeOptions {
        long_poll: Duration::ZERO,
        trace_update_interval: 100_000,
        ..Default::default()
    })
    .await
    .unwrap();
    let client =
        drover_gitlab::Client::new(drover_gitlab::ClientConfig::new(fake.url(), identity()))
            .unwrap();
    let token = verified_runner(&fake, &client, false).await;
    fake.enqueue_job(JobTemplate::new("b"));
    let job = take_job(&client, &token, false).await;
    client.accept_job(&(&job).into(), &info(false)).await;
    let (mut uploader, trace) = uploader(&client, &job, false);
    trace.write(b"x\n");
    uploader.tick().await;
    assert_eq!(
        uploader.interval(),
        Duration::from_secs(15 * 60),
        "capped at 15 minutes"
    );
}

#[tokio::test(start_paused = true)]
async fn run_ticks_every_interval_until_stopped() {
    let fake = fake().await;
    let client = client(fake.url());
    let token = verified_runner(&fake, &client, false).await;
    let id = fake.enqueue_job(JobTemplate::new("loop"));
    let job = take_job(&client, &token, false).await;
    client.accept_job(&(&job).into(), &info(false)).await;
    let (mut uploader, trace) = uploader(&client, &job, false);

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let writer = {
        let trace = trace.clone();
        tokio::spawn(async move {
            for i in 0..5 {
                trace.write(format!("line {i}\n").as_bytes());
                tokio::time::sleep(Duration::from_secs(4)).await;
            }
            let _ = stop_tx.send(());
        })
    };
    let state = uploader.run(async { stop_rx.await.unwrap_or(()) }).await;
    writer.await.unwrap();
    assert_eq!(state, RemoteState::Running);
    assert_eq!(
        uploader.finish(JobResult::Success).await,
        FinalOutcome::Accepted
    );

    let patches = requests_to(&fake, "PATCH", "/trace");
    assert!(
        patches.len() >= 3,
        "incremental patches while running: {}",
        patches.len()
    );
    for pair in patches.windows(2) {
        assert!(
            pair[1].at - pair[0].at >= Duration::from_secs(3),
            "patches are an interval apart"
        );
    }
    assert_eq!(fake.job(id).unwrap().trace, trace.lock().bytes());
    assert_no_violations(&fake);
}

#[tokio::test(start_paused = true)]
async fn resumes_after_a_restart_from_the_acknowledged_offset() {
    let fake = fake().await;
    let client = client(fake.url());
    let token = verified_runner(&fake, &client, false).await;
    let id = fake.enqueue_job(JobTemplate::new("long").masked_variable("TOKEN", "hunter2hunter2"));
    let job = take_job(&client, &token, false).await;
    client.accept_job(&(&job).into(), &info(false)).await;
    let options = TraceOptions::for_job(&job, None);

    // First life: part of the log goes out; the daemon persists bytes and acked offset.
    let (persisted_bytes, persisted_offset) = {
        let trace = SharedTrace::new(TraceBuffer::new(&options));
        let mut first = TraceUploader::new(
            client.clone(),
            &job,
            info(false),
            trace.clone(),
            UploaderConfig::default(),
        );
        trace.write(b"step 1 uses hunter2hunter2\n");
        first.tick().await;
        trace.write(b"step 2\n"); // stored, never sent: the process dies here
        let stored = trace.lock().bytes().to_vec();
        (stored, first.acked_offset())
    };
    assert!(persisted_offset > 0 && (persisted_offset as usize) < persisted_bytes.len());

    // Second life.
    let trace = SharedTrace::new(TraceBuffer::resume(&options, persisted_bytes));
    let mut second = TraceUploader::resume(
        client.clone(),
        &job,
        info(false),
        trace.clone(),
        UploaderConfig::default(),
        persisted_offset,
    );
    trace.write(b"step 3\n");
    assert_eq!(
        second
            .finish(JobResult::Failed {
                reason: drover_gitlab::api::FailureReason::ScriptFailure,
                exit_code: Some(3),
            })
            .await,
        FinalOutcome::Accepted
    );
    assert_eq!(
        second.finish(JobResult::Success).await,
        FinalOutcome::GaveUp("the final update was already sent for this job".into())
    );

    let view = fake.job(id).unwrap();
    assert_eq!(view.trace, trace.lock().bytes());
    assert!(String::from_utf8_lossy(&view.trace).ends_with("step 2\nstep 3\n"));
    let patches = requests_to(&fake, "PATCH", "/trace");
    assert_eq!(patches.len(), 2);
    assert!(
        patches[1]
            .header("content-range")
            .unwrap()
            .starts_with(&format!("{persisted_offset}-"))
    );
    assert_eq!(
        (view.status, view.exit_code, view.failure_reason.as_deref()),
        (JobStatus::Failed, Some(3), Some("script_failure"))
    );
    assert_eq!(final_puts(&fake, id).len(), 1, "exactly one final update");
    assert_no_violations(&fake);
}

#[tokio::test(start_paused = true)]
async fn job_requests_are_rate_limited_and_retried_after_the_window() {
    let fake = FakeGitlab::start(FakeOptions {
        long_poll: Duration::ZERO,
        job_request_rate_limit: Some(1),
        ..Default::default()
    })
    .await
    .unwrap();
    let client = client(fake.url());
    let token = verified_runner(&fake, &client, false).await;
    assert!(matches!(
        client.request_job(&job_request(&token, false, "")).await,
        RequestOutcome::NoJob { .. }
    ));
    let outcome = client.request_job(&job_request(&token, false, "")).await;
    assert!(
        matches!(outcome, RequestOutcome::NoJob { .. }),
        "retried after Retry-After: {outcome:?}"
    );
    let requests = requests_to(&fake, "POST", "/jobs/request");
    assert_eq!(
        requests
            .iter()
            .map(|r| r.status.unwrap())
            .collect::<Vec<_>>(),
        [204, 429, 204]
    );
    assert!(
        requests[2].at - requests[1].at >= Duration::from_secs(59),
        "waited for the window"
    );
    assert_no_violations(&fake);
}

#[tokio::test]
async fn failure_reasons_and_exit_codes_reach_gitlab_mapped() {
    let fake = fake().await;
    let client = client(fake.url());
    let token = verified_runner(&fake, &client, false).await;
    for (reason, expected) in [
        (
            drover_gitlab::api::FailureReason::ImagePullFailure,
            "runner_system_failure",
        ),
        (
            drover_gitlab::api::FailureReason::RunnerConfigurationError,
            "runner_configuration_error",
        ),
        (
            drover_gitlab::api::FailureReason::JobExecutionTimeout,
            "job_execution_timeout",
        ),
    ] {
        let id = fake.enqueue_job(JobTemplate::new("fails"));
        let job = take_job(&client, &token, false).await;
        client.accept_job(&(&job).into(), &info(false)).await;
        let (mut uploader, trace) = uploader(&client, &job, false);
        trace.write(b"boom\n");
        let outcome = uploader
            .finish(JobResult::Failed {
                reason,
                exit_code: Some(137),
            })
            .await;
        assert_eq!(outcome, FinalOutcome::Accepted);
        let view = fake.job(id).unwrap();
        assert_eq!(
            (view.status, view.failure_reason.as_deref(), view.exit_code),
            (JobStatus::Failed, Some(expected), Some(137))
        );
    }
    assert_no_violations(&fake);
}

#[tokio::test]
async fn a_raw_update_with_the_wrong_token_is_refused_without_job_status() {
    let fake = fake().await;
    let client = client(fake.url());
    let token = verified_runner(&fake, &client, false).await;
    fake.enqueue_job(JobTemplate::new("x"));
    let job = take_job(&client, &token, false).await;
    let wrong = JobCredentials {
        id: job.id,
        token: Secret::new("glcbt-wrong"),
    };
    let result = client
        .update_job(
            &wrong,
            &UpdateJobRequest::accept(info(false), Secret::new("glcbt-wrong")),
        )
        .await;
    assert_eq!((result.kind, result.job_status), (UpdateKind::Abort, None));
}

#[tokio::test]
async fn the_token_seed_decides_the_tokens() {
    let with_seed = |token_seed| FakeOptions {
        token_seed,
        ..FakeOptions::default()
    };
    let a = FakeGitlab::start(with_seed(1)).await.unwrap();
    let b = FakeGitlab::start(with_seed(1)).await.unwrap();
    let c = FakeGitlab::start(with_seed(2)).await.unwrap();
    let (ta, tb, tc) = (
        a.create_runner_token(),
        b.create_runner_token(),
        c.create_runner_token(),
    );
    assert!(ta.starts_with("glrt-"), "{ta}");
    assert_eq!(ta, tb, "the same seed gives the same tokens");
    assert_ne!(ta, tc, "another seed gives other tokens");
}

#[tokio::test(start_paused = true)]
async fn an_upload_limit_holds_back_what_the_owner_has_not_stored() {
    let fake = fake().await;
    let client = client(fake.url());
    let token = verified_runner(&fake, &client, false).await;
    let id = fake.enqueue_job(JobTemplate::new("limited"));
    let job = take_job(&client, &token, false).await;
    client.accept_job(&(&job).into(), &info(false)).await;
    let (mut uploader, trace) = uploader(&client, &job, false);

    trace.lock().limit_uploads_to(0);
    trace.write(b"stored line\n");
    trace.write(b"not stored yet\n");
    assert_eq!(
        uploader.tick().await,
        TickOutcome::Idle,
        "nothing stored, nothing sent"
    );
    assert!(fake.job(id).unwrap().trace.is_empty());

    trace.lock().limit_uploads_to("stored line\n".len() as u64);
    assert_eq!(uploader.tick().await, TickOutcome::Sent);
    assert_eq!(fake.job(id).unwrap().trace, b"stored line\n");
    assert_eq!(uploader.tick().await, TickOutcome::Idle);

    // The final update sends everything: the owner stores the finished trace before it.
    assert_eq!(
        uploader.finish(JobResult::Success).await,
        FinalOutcome::Accepted
    );
    assert_eq!(
        fake.job(id).unwrap().trace,
        b"stored line\nnot stored yet\n"
    );
    assert_no_violations(&fake);
}

/// GitLab holds more of the trace than the daemon stored (a local copy lost to a crash): the
/// uploader's sent offset and the acknowledged offset the daemon persists both come down to what
/// is stored, so the daemon never records GitLab as having bytes it cannot vouch for.
#[tokio::test(start_paused = true)]
async fn acked_comes_down_when_gitlab_holds_more_than_is_stored() {
    let fake = fake().await;
    let client = client(fake.url());
    let token = verified_runner(&fake, &client, false).await;
    fake.enqueue_job(JobTemplate::new("lost"));
    let job = take_job(&client, &token, false).await;
    client.accept_job(&(&job).into(), &info(false)).await;
    let options = TraceOptions::for_job(&job, None);

    let first_trace = SharedTrace::new(TraceBuffer::new(&options));
    let mut first = TraceUploader::new(
        client.clone(),
        &job,
        info(false),
        first_trace.clone(),
        UploaderConfig::default(),
    );
    first_trace.write(b"0123456789abcdef\n");
    first.tick().await;
    assert_eq!(first.acked_offset(), 17);

    // Second life with only 5 bytes stored, resumed from the (wrong) persisted offset 17.
    let trace = SharedTrace::new(TraceBuffer::resume(&options, b"01234".to_vec()));
    let second = TraceUploader::resume(
        client.clone(),
        &job,
        info(false),
        trace.clone(),
        UploaderConfig::default(),
        17,
    );
    let acked = second.acked();
    let mut second = second;
    assert_eq!(*acked.borrow(), 17);
    second.tick().await;
    assert_eq!(second.acked_offset(), 5);
    assert_eq!(
        *acked.borrow(),
        5,
        "the watched offset follows the sent one"
    );
}
