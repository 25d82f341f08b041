//! Every payload in fixtures/gitlab-api decodes (and re-encodes where drover sends it), and the
//! client reads every recorded exchange as GitLab Runner would.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use drover_gitlab::api::ServerReason;
use drover_gitlab::api::{
    self, JobRequest, JobResponse, RegisterRunnerRequest, ResetTokenRequest, ResetTokenResponse,
    RunnerTokenResponse, StepWhen, UnregisterRequest, UpdateJobRequest, VerifyRunnerRequest,
};
use drover_gitlab::retry::RetryPolicy;
use drover_gitlab::trace::{TraceBuffer, TraceOptions};
use drover_gitlab::{
    Client, ClientConfig, JobCredentials, PatchKind, RemoteJobStatus, RequestOutcome, Secret,
    UpdateKind,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::common::identity;

pub fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/gitlab-api")
        .join(name)
}

fn load(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(path(name)).unwrap()).unwrap()
}

fn decode<T: DeserializeOwned>(name: &str) -> T {
    api::decode(&std::fs::read(path(name)).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Decoding then encoding gives back the fixture, key for key.
fn round_trip<T: DeserializeOwned + Serialize>(name: &str) -> T {
    let decoded: T = decode(name);
    assert_eq!(
        serde_json::to_value(&decoded).unwrap(),
        load(name),
        "{name} does not round-trip"
    );
    decoded
}

fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(
            a.iter()
                .filter(|v| !v.is_null())
                .map(without_nulls)
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Every non-null value of `original` is in `encoded` at the same place.
fn assert_subset(original: &Value, encoded: &Value, at: &str) {
    match (original, encoded) {
        (Value::Object(o), Value::Object(e)) => {
            for (k, v) in o {
                let there = e
                    .get(k)
                    .unwrap_or_else(|| panic!("{at}.{k} is lost on re-encoding"));
                assert_subset(v, there, &format!("{at}.{k}"));
            }
        }
        (Value::Array(o), Value::Array(e)) => {
            assert_eq!(o.len(), e.len(), "{at}");
            for (i, (a, b)) in o.iter().zip(e).enumerate() {
                assert_subset(a, b, &format!("{at}[{i}]"));
            }
        }
        _ => assert_eq!(original, encoded, "{at}"),
    }
}

#[test]
fn every_fixture_file_is_covered() {
    let mut names: Vec<String> = std::fs::read_dir(path(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "job-request-responses.json",
            "job-request.json",
            "job-response.json",
            "job-update-request-canceled.json",
            "job-update-request-failed.json",
            "job-update-request-running-ack.json",
            "job-update-request-running-keepalive.json",
            "job-update-request-success.json",
            "job-update-responses.json",
            "register-request.json",
            "register-response.json",
            "reset-token-request.json",
            "reset-token-response.json",
            "trace-patches.json",
            "unregister-manager-request.json",
            "unregister-request.json",
            "verify-request.json",
            "verify-response.json",
        ],
        "a new fixture needs a test here"
    );
}

#[test]
fn runner_payloads_round_trip() {
    let register: RegisterRunnerRequest = round_trip("register-request.json");
    assert_eq!(register.token.expose(), "GR1348941aBcDeFgHiJkLmNoPqRsT");
    assert_eq!(
        (
            register.locked,
            register.run_untagged,
            register.maximum_timeout
        ),
        (Some(true), Some(false), 7200)
    );
    assert!(register.info.features.two_phase_job_commit && !register.info.features.image);

    let registered: RunnerTokenResponse = decode("register-response.json");
    assert_eq!(
        (
            registered.id,
            registered.token.expose(),
            registered.token_expires_at.as_str()
        ),
        (217, "glrtr-Xk2mP9qLw4ZsT7vB8nYd", "")
    );

    let verify: VerifyRunnerRequest = round_trip("verify-request.json");
    assert_eq!(verify.system_id, "s_0123456789ab");
    let verified: RunnerTokenResponse = round_trip("verify-response.json");
    assert_eq!(
        (verified.id, verified.token_expires_at.as_str()),
        (218, "2026-12-31T12:00:00.000Z")
    );

    let unregister: UnregisterRequest = round_trip("unregister-request.json");
    assert!(unregister.system_id.is_empty());
    let manager: UnregisterRequest = round_trip("unregister-manager-request.json");
    assert_eq!(manager.system_id, "s_0123456789ab");
    let _: ResetTokenRequest = round_trip("reset-token-request.json");
    let reset: ResetTokenResponse = round_trip("reset-token-response.json");
    assert_eq!(reset.token.expose(), "glrt-t1_Nw4hR2kPq8ZxV5mTyLcB");

    let request: JobRequest = round_trip("job-request.json");
    assert_eq!(request.last_update, "3f55cec3cb9b07c42b5ca85c71471a0c");
    assert!(request.info.features.cancel_gracefully);
}

#[test]
fn job_update_requests_round_trip() {
    let ack: UpdateJobRequest = round_trip("job-update-request-running-ack.json");
    assert_eq!(
        ack,
        UpdateJobRequest::accept(ack.info.clone(), ack.token.clone())
    );
    let keep_alive: UpdateJobRequest = round_trip("job-update-request-running-keepalive.json");
    assert_eq!(
        (
            keep_alive.output.bytesize,
            keep_alive.output.checksum.as_str()
        ),
        (845, "crc32:6ce7a139")
    );
    let success: UpdateJobRequest = round_trip("job-update-request-success.json");
    assert_eq!(success.exit_code, None);
    let failed: UpdateJobRequest = round_trip("job-update-request-failed.json");
    assert_eq!(
        (failed.failure_reason.as_str(), failed.exit_code),
        ("script_failure", Some(1))
    );
    let canceled: UpdateJobRequest = round_trip("job-update-request-canceled.json");
    assert_eq!(canceled.failure_reason, "unknown_failure");
    // drover builds the same final update from the same facts.
    let built = UpdateJobRequest::finish(
        failed.info.clone(),
        failed.token.clone(),
        api::JobState::Failed,
        api::FailureReason::ScriptFailure.for_server(&[]),
        Some(1),
        failed.output.clone(),
    );
    assert_eq!(built, failed);
}

#[test]
fn the_job_payload_decodes_fully_and_re_encodes_without_loss() {
    let job: JobResponse = decode("job-response.json");
    assert_eq!(
        (job.id, job.token.expose()),
        (4821, "glcbt-64_xQz3vLmT7bN2pWdR8sYk")
    );
    assert_eq!(job.job_info.instance_id, "1");
    assert_eq!(job.job_info.scoped_user_id, None);
    assert!((job.job_info.time_in_queue_seconds - 2.417).abs() < 1e-9);
    assert_eq!(job.git_info.git_ref, "main");
    assert_eq!(job.git_info.protected, Some(true));
    assert_eq!(job.git_info.refspecs.len(), 2);
    assert_eq!(job.timeout(), std::time::Duration::from_secs(3600));
    assert_eq!(job.variables.len(), 34);
    let file = job
        .variables
        .iter()
        .find(|v| v.key == "KUBECONFIG_FILE")
        .unwrap();
    assert!(file.file && !file.raw);
    assert!(
        job.variables
            .iter()
            .find(|v| v.key == "LITERAL_DOLLARS")
            .unwrap()
            .raw
    );
    assert_eq!(
        job.masked_values(),
        ["glcbt-64_xQz3vLmT7bN2pWdR8sYk", "s3cr3t-Pa55w0rd"]
    );
    assert_eq!(job.steps[1].when, StepWhen::Always);
    assert!(job.steps[1].allow_failure);
    assert_eq!(job.image.name, "ruby:3.3-alpine");
    assert!(job.image.entrypoint.is_empty(), "null is the zero value");
    assert_eq!(job.services[1].aliases(), ["cache", "redis"]);
    assert_eq!(job.services[1].command, ["redis-server", "--save", ""]);
    assert_eq!(
        job.services[1]
            .executor_opts
            .docker
            .as_ref()
            .unwrap()
            .platform,
        "linux/amd64"
    );
    assert!(job.services[0].executor_opts.other.is_empty());
    assert_eq!(job.services[0].variables.len(), 3);
    assert_eq!(job.artifacts[1].artifact_format, "gzip");
    assert_eq!(job.cache[0].fallback_keys, ["gems-default-protected"]);
    assert_eq!(job.credentials[0].password.expose(), job.token.expose());
    assert_eq!(
        job.dependencies[0].artifacts_file.as_ref().unwrap().size,
        1_048_576
    );
    assert!(job.dependencies[1].artifacts_file.is_none());
    assert_eq!(job.features.failure_reasons.len(), 52);

    let encoded = serde_json::to_value(&job).unwrap();
    assert_subset(&without_nulls(&load("job-response.json")), &encoded, "job");
    let again: JobResponse = api::decode(encoded.to_string().as_bytes()).unwrap();
    assert_eq!(again, job);

    // Debug output never shows secrets.
    let shown = format!("{job:?} {:?} {:?}", job.git_info, job.variables);
    assert!(
        !shown.contains("xQz3vLmT7bN2pWdR8sYk") && !shown.contains("s3cr3t-Pa55w0rd"),
        "{shown}"
    );
}

#[test]
fn old_servers_nulls_and_unknown_keys_are_tolerated() {
    let json = br#"{"id": 7, "token": "t", "image": null, "artifacts": null, "cache": [null],
        "services": [{"name": "db", "alias": null, "command": null, "entrypoint": null, "variables": null, "pull_policy": null}],
        "steps": [{"name": "script", "script": ["x"], "when": "on_manual_whim", "timeout": null}],
        "git_info": {"depth": null, "protected": null},
        "runner_info": {"timeout": 0},
        "something_new": {"nested": [1, 2]}}"#;
    let job: JobResponse = api::decode(json).unwrap();
    assert_eq!(job.id, 7);
    assert!(job.cache.is_empty() && job.artifacts.is_empty() && job.image.name.is_empty());
    assert_eq!(job.services[0].alias, "");
    assert_eq!(job.steps[0].when, StepWhen::Unknown);
    assert_eq!(job.git_info.protected, None);
    assert_eq!(
        job.timeout(),
        std::time::Duration::from_secs(7200),
        "0 means the default"
    );
}

#[test]
fn the_trace_fixture_checksums_match_drovers() {
    let fixture = load("trace-patches.json");
    let full = fixture["full_trace"].as_str().unwrap();
    let patches: String = fixture["patches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["content"].as_str().unwrap())
        .collect();
    assert_eq!(patches, full);
    let opts = TraceOptions {
        limit_bytes: 4096 * 1024,
        phrases: vec![],
        token_prefixes: vec![],
    };
    let mut buffer = TraceBuffer::new(&opts);
    let mut keep_alive = None;
    for p in fixture["patches"].as_array().unwrap() {
        buffer.write(p["content"].as_str().unwrap().as_bytes());
        if buffer.len() == 845 {
            keep_alive = Some(buffer.checksum());
        }
    }
    buffer.finish();
    assert_eq!(
        buffer.len(),
        fixture["full_trace_bytesize"].as_u64().unwrap()
    );
    assert_eq!(
        buffer.checksum(),
        fixture["full_trace_checksum"].as_str().unwrap()
    );
    // The keep-alive fixture reports the first 845 bytes.
    assert_eq!(keep_alive.as_deref(), Some("crc32:6ce7a139"));
}

// ---- recorded exchanges, replayed by a scripted server -----------------------------------------

struct Scripted {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

type Seen = Arc<Mutex<Vec<(String, String, Vec<(String, String)>)>>>;

/// Serves the scripted responses in order, recording method, path and headers.
async fn scripted_server(script: Vec<Scripted>) -> (String, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let script = Arc::new(Mutex::new(script.into_iter()));
    let seen: Seen = Arc::default();
    let seen_by_server = seen.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (script, seen) = (script.clone(), seen_by_server.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let headers = req
                            .headers()
                            .iter()
                            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
                            .collect();
                        seen.lock().unwrap().push((
                            req.method().to_string(),
                            req.uri().to_string(),
                            headers,
                        ));
                        let next = script
                            .lock()
                            .unwrap()
                            .next()
                            .expect("more requests than scripted");
                        let mut response = hyper::Response::builder().status(next.status);
                        for (n, v) in &next.headers {
                            response = response.header(n, v);
                        }
                        let response = response
                            .body(http_body_util::Full::new(Bytes::from(next.body)))
                            .unwrap();
                        async move { Ok::<_, std::convert::Infallible>(response) }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, seen)
}

fn script_of(fixture: &Value) -> Vec<Scripted> {
    fixture["exchanges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            let response = &x["response"];
            let body = match response.get("body_file").and_then(Value::as_str) {
                Some(file) => std::fs::read(path(file)).unwrap(),
                None => response["body"]
                    .as_str()
                    .unwrap_or_default()
                    .as_bytes()
                    .to_vec(),
            };
            Scripted {
                status: response["status"].as_u64().unwrap() as u16,
                headers: response["headers"]
                    .as_object()
                    .map(|h| {
                        h.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                            .collect()
                    })
                    .unwrap_or_default(),
                body,
            }
        })
        .collect()
}

fn single_attempt_client(url: &str) -> Client {
    let mut config = ClientConfig::new(url, identity());
    config.retry = RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::default()
    };
    Client::new(config).unwrap()
}

#[tokio::test]
async fn job_request_exchanges_read_as_gitlab_runner_reads_them() {
    let (url, _) = scripted_server(script_of(&load("job-request-responses.json"))).await;
    let client = single_attempt_client(&url);
    let request: JobRequest = decode("job-request.json");
    let mut outcomes = Vec::new();
    for _ in 0..7 {
        outcomes.push(client.request_job(&request).await);
    }
    assert!(matches!(&outcomes[0], RequestOutcome::Job(job) if job.id == 4821));
    assert!(
        matches!(&outcomes[1], RequestOutcome::NoJob { last_update: Some(v), .. } if v == "8c1e0a5d27f94b6e9a3d2c1b0f7e6d5a")
    );
    assert!(matches!(
        &outcomes[2],
        RequestOutcome::NoJob {
            last_update: None,
            ..
        }
    ));
    assert!(matches!(
        &outcomes[3],
        RequestOutcome::Failed {
            status: Some(403),
            unhealthy: true,
            ..
        }
    ));
    assert!(matches!(
        &outcomes[4],
        RequestOutcome::Failed {
            status: Some(409),
            unhealthy: false,
            ..
        }
    ));
    match &outcomes[5] {
        RequestOutcome::Failed {
            status: Some(429),
            retry_after: Some(d),
            unhealthy: false,
            message,
        } => {
            assert_eq!(d.as_secs(), 60);
            assert!(
                message.contains("Executing database migrations"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(&outcomes[6], RequestOutcome::Failed { status: Some(400), message, .. } if message.contains("token is missing"))
    );
}

#[tokio::test]
async fn job_update_exchanges_read_as_gitlab_runner_reads_them() {
    let (url, seen) = scripted_server(script_of(&load("job-update-responses.json"))).await;
    let client = single_attempt_client(&url);
    let update: UpdateJobRequest = decode("job-update-request-success.json");
    let creds = JobCredentials {
        id: 4821,
        token: update.token.clone(),
    };
    let mut results = Vec::new();
    for _ in 0..7 {
        results.push(client.update_job(&creds, &update).await);
    }
    let kinds: Vec<&UpdateKind> = results.iter().map(|r| &r.kind).collect();
    assert_eq!(
        kinds[..6],
        [
            &UpdateKind::Ok,
            &UpdateKind::Ok,
            &UpdateKind::Accepted,
            &UpdateKind::Abort,
            &UpdateKind::Abort,
            &UpdateKind::Failed("GitLab answered 409: 409".into())
        ]
    );
    assert!(matches!(kinds[6], UpdateKind::Failed(m) if m.contains("400")));
    assert!(!results[0].cancel_requested() && results[1].cancel_requested());
    assert_eq!(
        results[2].update_interval,
        Some(std::time::Duration::from_secs(2))
    );
    assert_eq!(results[3].job_status, Some(RemoteJobStatus::Failed));
    assert_eq!(results[4].job_status, None);
    let (method, path, headers) = &seen.lock().unwrap()[0];
    assert_eq!(
        (method.as_str(), path.as_str()),
        ("PUT", "/api/v4/jobs/4821")
    );
    assert!(headers.contains(&("job-token".into(), "glcbt-64_xQz3vLmT7bN2pWdR8sYk".into())));
}

#[tokio::test]
async fn trace_exchanges_read_as_gitlab_runner_reads_them() {
    let fixture = load("trace-patches.json");
    let (url, seen) = scripted_server(script_of(&fixture)).await;
    let client = single_attempt_client(&url);
    let exchanges = fixture["exchanges"].as_array().unwrap();
    let creds = JobCredentials {
        id: 4821,
        token: Secret::new("glcbt-64_xQz3vLmT7bN2pWdR8sYk"),
    };
    let mut kinds = Vec::new();
    for x in exchanges {
        let req = &x["request"];
        let body = Bytes::from(req["body"].as_str().unwrap().as_bytes().to_vec());
        let start = req["headers"]["Content-Range"]
            .as_str()
            .map_or(0, |r| r.split('-').next().unwrap().parse().unwrap());
        let result = client.patch_trace(&creds, start, body).await;
        kinds.push((result.kind.clone(), result.cancel_requested()));
    }
    assert_eq!(
        kinds[..5],
        [
            (PatchKind::Accepted { sent_to: 369 }, false),
            (PatchKind::RangeMismatch { server_size: 369 }, false),
            (PatchKind::Accepted { sent_to: 1265 }, false),
            (PatchKind::Accepted { sent_to: 1267 }, true),
            (PatchKind::Abort, false),
        ]
    );
    assert!(matches!(&kinds[5].0, PatchKind::Failed(m) if m.contains("400")));
    // drover sent what GitLab Runner sent, header for header.
    let seen = seen.lock().unwrap();
    for (x, (method, path, headers)) in exchanges.iter().zip(seen.iter()).take(5) {
        let req = &x["request"];
        assert_eq!(method, req["method"].as_str().unwrap());
        assert_eq!(path, req["path"].as_str().unwrap());
        for name in [
            "JOB-TOKEN",
            "Content-Type",
            "Content-Range",
            "Content-Length",
        ] {
            let ours = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str());
            assert_eq!(ours, req["headers"][name].as_str(), "{name} of {path}");
        }
    }
}
