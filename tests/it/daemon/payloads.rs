//! Job payloads drover cannot use: the job is failed at once with the field named, nothing is
//! dropped that names a job, and the request cadence does not change.

use std::time::{Duration, Instant};

use drover_gitlab::fake::{Fault, JobStatus, JobView, Route};
use serde_json::json;

use super::harness::*;

/// The JSON GitLab served for `job` with `value` at `pointer` (what [`JobTemplate::json_at`] did).
fn served(job: &JobView, pointer: &str, value: serde_json::Value) -> Vec<u8> {
    let mut tree = serde_json::to_value(&job.response).expect("a payload encodes");
    *tree.pointer_mut(pointer).expect("the member exists") = value;
    serde_json::to_vec(&tree).expect("a payload encodes")
}

/// Waits until drover has asked for a job (and so waits in a long poll).
async fn polling(env: &Env) {
    eventually("a job request", async || {
        env.fake
            .requests()
            .iter()
            .any(|r| r.path.ends_with("/jobs/request"))
            .then_some(())
    })
    .await;
}

/// The value of the `drover_unusable_job_payloads_total` series with `outcome`.
fn unusable(metrics: &str, outcome: &str) -> Option<u64> {
    metrics
        .lines()
        .find(|l| {
            l.starts_with("drover_unusable_job_payloads_total{")
                && l.contains(&format!("outcome=\"{outcome}\""))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_with_a_wrong_typed_field_is_failed_at_once_naming_the_field() {
    let Some(mut env) = Env::new("payloads_wrong_type", Settings::docker()).await else {
        return;
    };
    env.start().await;
    polling(&env).await;
    let sent = Instant::now();
    let id = env.enqueue(
        job("wrong-type", &["echo never-runs-$((1))"])
            .json_at("/steps/0/script", json!("echo never-runs-$((1))")),
    );
    let view = within(PATIENCE, "the failure report", env.finished(id)).await;
    let took = sent.elapsed();
    assert_final(
        &view,
        JobStatus::Failed,
        Some("runner_system_failure"),
        None,
    );
    let trace = text(&view);
    assert!(
        trace.contains(
            "GitLab sent this job with a payload drover cannot use: field `steps[0].script`: \
             expected an array, found a string"
        ),
        "{trace}"
    );
    assert!(!trace.contains("never-runs-1\n"), "nothing ran: {trace}");
    assert!(
        took < Duration::from_secs(3),
        "reported failed {took:?} after it was queued"
    );
    let log = env.last_log();
    assert!(
        log.contains(&format!("job={id}")) && log.contains("steps[0].script"),
        "the log names the job and the field:\n{log}"
    );
    assert_eq!(unusable(&env.metrics().await, "failed"), Some(1));
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_unusable_answers_leaves_the_request_cadence_alone() {
    let Some(mut env) = Env::new("payloads_cadence", Settings::docker()).await else {
        return;
    };
    env.start().await;
    polling(&env).await;
    // Answers that name no job (dropped), then jobs drover cannot use (failed), then a good one.
    for garbage in [
        &b"[]"[..],
        b"{}",
        b"{\"id\": \"1\", \"token\": 5}",
        b"not json",
    ] {
        env.fake.answer_raw(garbage);
    }
    let bad: Vec<u64> = [
        ("/git_info/depth", json!(-1)),
        ("/image", json!(["alpine"])),
        ("/variables/0/masked", json!("yes")),
    ]
    .into_iter()
    .map(|(pointer, value)| env.enqueue(job("bad", &["true"]).json_at(pointer, value)))
    .collect();
    let good = env.enqueue(job("good", &["echo good-$((6 * 7))"]));
    let view = within(PATIENCE, "the good job", env.finished(good)).await;
    assert_final(&view, JobStatus::Success, None, None);
    assert_eq!(lines(&view, "good-42"), 1);
    for (id, field) in bad
        .iter()
        .zip(["git_info.depth", "image", "variables[0].masked"])
    {
        let view = env.finished(*id).await;
        assert_final(
            &view,
            JobStatus::Failed,
            Some("runner_system_failure"),
            None,
        );
        assert!(
            text(&view).contains(&format!("field `{field}`")),
            "{}",
            text(&view)
        );
    }
    // Every answer came right after the one before, at the check interval (1 s): a backoff
    // would be 60 s.
    let answered: Vec<_> = env
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/jobs/request") && r.status == Some(201))
        .map(|r| r.at)
        .collect();
    assert_eq!(answered.len(), 8, "4 raw answers, 3 bad jobs, 1 good");
    for pair in answered.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap < Duration::from_secs(4), "{gap:?} between two answers");
    }

    // A job failed that way that comes back is left alone: not accepted, not failed again.
    let first = env.job(bad[0]);
    let updates = first.updates.len();
    env.fake
        .answer_raw(served(&first, "/git_info/depth", json!(-1)));
    eventually("the repeat to be seen", async || {
        let metrics = env.metrics().await;
        (unusable(&metrics, "repeated") == Some(1)).then_some(metrics)
    })
    .await;
    assert_eq!(
        env.job(bad[0]).updates.len(),
        updates,
        "no call for the repeat"
    );
    let metrics = env.metrics().await;
    assert_eq!(unusable(&metrics, "dropped"), Some(4), "{metrics}");
    assert_eq!(unusable(&metrics, "failed"), Some(3), "{metrics}");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_with_a_mebibyte_variable_prints_its_length_and_succeeds() {
    let Some(mut env) = Env::new("payloads_big_variable", Settings::docker()).await else {
        return;
    };
    env.start().await;
    let big = "a".repeat(1 << 20);
    let masked = format!("m{}", "b".repeat((1 << 20) - 1));
    let id = env.enqueue(
        job("big", &["echo \"big=${#BIG} masked=${#BIG_MASKED}\""])
            .variable("BIG", &big)
            .masked_variable("BIG_MASKED", &masked),
    );
    let view = within(PATIENCE, "the job", env.finished(id)).await;
    assert_final(&view, JobStatus::Success, None, None);
    let trace = text(&view);
    assert_eq!(lines(&view, "big=1048576 masked=1048576"), 1, "{trace}");
    assert!(
        trace.contains("the variable BIG is 1048580 bytes as KEY=value"),
        "{trace}"
    );
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_delivered_again_while_it_runs_is_a_warning_and_runs_once() {
    let Some(mut env) = Env::new("payloads_twice", Settings::docker()).await else {
        return;
    };
    env.start().await;
    let id = env.enqueue(job(
        "twice",
        &["echo started-$((1))", "sleep 8", "echo done-$((2))"],
    ));
    // The script sleeps long enough for both deliveries (a request a second) to come while it runs.
    let running = env.trace_shows(id, "started-1").await;
    env.fake
        .answer_raw(serde_json::to_vec(&running.response).expect("a payload encodes"));
    // Garbled the second time: still the job drover runs, which must not be failed for it.
    env.fake
        .answer_raw(served(&running, "/git_info/depth", json!(-1)));
    let view = within(PATIENCE, "the job", env.finished(id)).await;
    assert_final(&view, JobStatus::Success, None, None);
    assert_eq!(lines(&view, "started-1"), 1);
    assert_eq!(lines(&view, "done-2"), 1);
    let log = env.last_log();
    assert!(
        log.contains(&format!(
            "GitLab delivered job {id} again while drover holds it;"
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "GitLab delivered job {id} again while drover holds it, with a payload"
        )),
        "{log}"
    );
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_failure_of_an_unusable_payload_survives_a_crash() {
    let settings = Settings {
        shutdown_timeout: 120,
        ..Settings::docker()
    };
    let Some(mut env) = Env::new("payloads_crash", settings).await else {
        return;
    };
    env.start().await;
    polling(&env).await;
    // GitLab is slow to take the report, and drover dies meanwhile.
    env.fake.inject(Fault::Delay {
        route: Route::FinalUpdate,
        delay: Duration::from_secs(300),
        times: 1,
    });
    let id = env.enqueue(job("unusable", &["true"]).json_at("/runner_info/timeout", json!("1h")));
    eventually("the failure report sent", async || {
        env.fake
            .requests()
            .iter()
            .any(|r| r.method == "PUT" && r.json().is_some_and(|j| j["state"] == "failed"))
            .then_some(())
    })
    .await;
    env.crash().await;
    assert!(!env.job(id).status.is_finished());

    env.start().await;
    let view = env.finished(id).await;
    assert_final(
        &view,
        JobStatus::Failed,
        Some("runner_system_failure"),
        None,
    );
    assert!(
        text(&view).contains("cannot use: field `runner_info.timeout`: expected i64"),
        "the reason survives the crash: {}",
        text(&view)
    );
    env.finish().await;
}
