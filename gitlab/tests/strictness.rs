//! The fake flags protocol mistakes: a client that gets them wrong fails its tests.

use drover_gitlab::fake::{FakeGitlab, JobTemplate};
use drover_gitlab::{Client, Secret};
use serde_json::json;

use crate::common::*;

/// A running job and a raw HTTP client to misbehave with.
async fn setup() -> (FakeGitlab, Client, u64, Secret, reqwest::Client) {
    let fake = fake().await;
    let client = client(fake.url());
    let token = verified_runner(&fake, &client, false).await;
    let id = fake.enqueue_job(JobTemplate::new("strict"));
    let job = take_job(&client, &token, false).await;
    client.accept_job(&(&job).into(), &info(false)).await;
    assert_no_violations(&fake);
    (fake, client, id, job.token.clone(), reqwest::Client::new())
}

fn raw(http: &reqwest::Client, method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
    http.request(method, url)
        .header("User-Agent", "raw-test")
        .header("X-Request-Id", "0123456789abcdef0123456789abcdef")
}

fn violation_messages(fake: &FakeGitlab) -> Vec<String> {
    fake.violations().into_iter().map(|v| v.message).collect()
}

#[tokio::test]
async fn a_missing_or_wrong_token_header_is_flagged() {
    let (fake, _client, id, job_token, http) = setup().await;
    let trace_url = format!(
        "{}/api/v4/jobs/{id}/trace?token={}",
        fake.url(),
        job_token.expose()
    );
    let reply = raw(&http, reqwest::Method::PATCH, trace_url)
        .header("Content-Type", "text/plain")
        .header("Content-Range", "0-2")
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(
        reply.status(),
        202,
        "GitLab itself would accept the query token"
    );
    assert_eq!(violation_messages(&fake), ["no JOB-TOKEN header"]);

    let request_url = format!("{}/api/v4/jobs/request", fake.url());
    let runner = fake.runners().pop().unwrap();
    raw(&http, reqwest::Method::POST, request_url)
        .header("Content-Type", "application/json")
        .header("RUNNER-TOKEN", "glrt-somebody-else")
        .body(json!({ "token": runner.token, "info": {} }).to_string())
        .send()
        .await
        .unwrap();
    assert!(
        violation_messages(&fake)
            .contains(&"RUNNER-TOKEN header differs from the body token".to_string())
    );
}

#[tokio::test]
async fn a_malformed_or_inconsistent_content_range_is_flagged() {
    let (fake, _client, id, job_token, http) = setup().await;
    let url = format!("{}/api/v4/jobs/{id}/trace", fake.url());
    let patch = |range: Option<&'static str>, body: &'static str| {
        let mut r = raw(&http, reqwest::Method::PATCH, url.clone())
            .header("JOB-TOKEN", job_token.expose())
            .header("Content-Type", "text/plain")
            .body(body);
        if let Some(range) = range {
            r = r.header("Content-Range", range);
        }
        r.send()
    };
    assert_eq!(
        patch(Some("bytes 0-2/3"), "abc").await.unwrap().status(),
        400
    );
    assert_eq!(patch(None, "abc").await.unwrap().status(), 400);
    // An exclusive end (one past the last byte) is the classic mistake.
    assert_eq!(patch(Some("0-3"), "abc").await.unwrap().status(), 202);
    let messages = violation_messages(&fake);
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert!(
        messages[0].starts_with("malformed Content-Range"),
        "{messages:?}"
    );
    assert_eq!(messages[1], "no Content-Range header");
    assert!(
        messages[2].contains("does not match the 3 bytes sent"),
        "{messages:?}"
    );
}

#[tokio::test]
async fn premature_second_and_late_updates_are_flagged() {
    let (fake, client, id, job_token, http) = setup().await;
    let creds = drover_gitlab::JobCredentials {
        id,
        token: job_token.clone(),
    };
    let put = |state: &str, bytesize: u64, checksum: &str, exit_code: Option<i32>| {
        let mut body = json!({
            "token": job_token.expose(),
            "state": state,
            "checksum": checksum,
            "output": { "checksum": checksum, "bytesize": bytesize },
        });
        if let Some(code) = exit_code {
            body["exit_code"] = json!(code);
        }
        raw(
            &http,
            reqwest::Method::PUT,
            format!("{}/api/v4/jobs/{id}", fake.url()),
        )
        .header("JOB-TOKEN", job_token.expose())
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
    };
    let sent = client
        .patch_trace(&creds, 0, bytes::Bytes::from_static(b"hello\n"))
        .await;
    assert!(matches!(
        sent.kind,
        drover_gitlab::PatchKind::Accepted { sent_to: 6 }
    ));
    let checksum = format!("crc32:{:08x}", crc32fast::hash(b"hello\n"));

    // Declares more than GitLab holds: the trace is not complete yet.
    assert_eq!(
        put("success", 10, &checksum, None).await.unwrap().status(),
        202
    );
    assert!(violation_messages(&fake)[0].starts_with("final update before the trace is complete"));
    // exit_code 0 must be omitted.
    assert_eq!(
        put("failed", 6, &checksum, Some(0)).await.unwrap().status(),
        200
    );
    assert_eq!(violation_messages(&fake)[1], "exit_code 0 must be omitted");
    // A second final update.
    assert_eq!(
        put("success", 6, &checksum, None).await.unwrap().status(),
        403
    );
    assert!(violation_messages(&fake)[2].starts_with("a second final update"));
    // A patch after the final update.
    let late = client
        .patch_trace(&creds, 6, bytes::Bytes::from_static(b"late\n"))
        .await;
    assert_eq!(late.kind, drover_gitlab::PatchKind::Abort);
    assert_eq!(
        violation_messages(&fake)[3],
        "a trace patch after the final update"
    );
    assert_eq!(fake.violations().len(), 4);
}

#[tokio::test]
async fn a_final_update_with_a_wrong_checksum_is_flagged() {
    let (fake, client, id, job_token, _http) = setup().await;
    let creds = drover_gitlab::JobCredentials {
        id,
        token: job_token.clone(),
    };
    client
        .patch_trace(&creds, 0, bytes::Bytes::from_static(b"abc"))
        .await;
    let update = drover_gitlab::api::UpdateJobRequest::finish(
        info(false),
        job_token.clone(),
        drover_gitlab::api::JobState::Success,
        "",
        None,
        drover_gitlab::api::JobOutput {
            checksum: "crc32:deadbeef".into(),
            bytesize: 3,
        },
    );
    client.update_job(&creds, &update).await;
    let messages = violation_messages(&fake);
    assert_eq!(messages.len(), 1);
    assert!(
        messages[0].contains("does not match the stored trace"),
        "{messages:?}"
    );
}

#[tokio::test]
async fn an_unknown_endpoint_is_flagged() {
    let (fake, _client, _id, _token, http) = setup().await;
    let reply = raw(
        &http,
        reqwest::Method::GET,
        format!("{}/api/v4/runners/all", fake.url()),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(reply.status(), 404);
    assert_eq!(
        violation_messages(&fake),
        ["no such endpoint in GitLab's runner API"]
    );
}
