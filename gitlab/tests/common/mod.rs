//! Helpers shared by the integration tests.

use std::time::Duration;

use drover_gitlab::api::{FeaturesInfo, JobRequest, JobResponse, RunnerInfo, VerifyRunnerRequest};
use drover_gitlab::fake::{FakeGitlab, FakeOptions};
use drover_gitlab::retry::RetryPolicy;
use drover_gitlab::trace::{SharedTrace, TraceBuffer, TraceOptions, TraceUploader, UploaderConfig};
use drover_gitlab::{Client, ClientConfig, RequestOutcome, RunnerIdentity, Secret};

pub const SYSTEM_ID: &str = "r_abcdefABCDEF";

pub fn identity() -> RunnerIdentity {
    RunnerIdentity::drover("0.1.0", "test")
}

pub fn client(url: &str) -> Client {
    let mut config = ClientConfig::new(url, identity());
    config.retry = RetryPolicy {
        seed: Some(42),
        ..RetryPolicy::default()
    };
    Client::new(config).expect("client")
}

pub fn features(graceful: bool) -> FeaturesInfo {
    FeaturesInfo {
        cancel_gracefully: graceful,
        ..FeaturesInfo::client_protocol()
    }
}

pub fn info(graceful: bool) -> RunnerInfo {
    identity().info("docker", "bash", features(graceful))
}

/// A fake that answers job requests at once (no long-poll hold).
pub async fn fake() -> FakeGitlab {
    FakeGitlab::start(FakeOptions {
        long_poll: Duration::ZERO,
        ..FakeOptions::default()
    })
    .await
    .expect("fake")
}

/// Creates a `glrt-` runner and verifies it (which records its manager and features).
pub async fn verified_runner(fake: &FakeGitlab, client: &Client, graceful: bool) -> Secret {
    let token = Secret::new(fake.create_runner_token());
    let request = VerifyRunnerRequest {
        info: Some(info(graceful)),
        token: token.clone(),
        system_id: SYSTEM_ID.into(),
    };
    client
        .verify_runner(&request)
        .await
        .expect("verify")
        .expect("details");
    token
}

pub fn job_request(token: &Secret, graceful: bool, last_update: &str) -> JobRequest {
    JobRequest {
        info: info(graceful),
        token: token.clone(),
        system_id: SYSTEM_ID.into(),
        last_update: last_update.into(),
        session: None,
    }
}

/// Requests a job, expecting one.
pub async fn take_job(client: &Client, token: &Secret, graceful: bool) -> JobResponse {
    match client.request_job(&job_request(token, graceful, "")).await {
        RequestOutcome::Job(job) => *job,
        other => panic!("expected a job, got {other:?}"),
    }
}

/// An uploader (and its trace) for an accepted job.
pub fn uploader(
    client: &Client,
    job: &JobResponse,
    graceful: bool,
) -> (TraceUploader, SharedTrace) {
    let trace = SharedTrace::new(TraceBuffer::new(&TraceOptions::for_job(job, None)));
    let uploader = TraceUploader::new(
        client.clone(),
        job,
        info(graceful),
        trace.clone(),
        UploaderConfig::default(),
    );
    (uploader, trace)
}

pub fn assert_no_violations(fake: &FakeGitlab) {
    let violations = fake.violations();
    assert!(
        violations.is_empty(),
        "the fake saw protocol violations:\n{}",
        violations
            .iter()
            .map(|v| format!("  {v}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Requests the fake recorded for `method` and a path ending in `suffix`.
pub fn requests_to(
    fake: &FakeGitlab,
    method: &str,
    suffix: &str,
) -> Vec<drover_gitlab::fake::RecordedRequest> {
    fake.requests()
        .into_iter()
        .filter(|r| r.method == method && r.path.ends_with(suffix))
        .collect()
}

/// Final updates (`PUT` with a final state) the fake received for `job`.
pub fn final_puts(fake: &FakeGitlab, job: u64) -> Vec<drover_gitlab::fake::RecordedRequest> {
    requests_to(fake, "PUT", &format!("/jobs/{job}"))
        .into_iter()
        .filter(|r| {
            r.json()
                .is_some_and(|v| matches!(v["state"].as_str(), Some("success" | "failed")))
        })
        .collect()
}
