//! Coordinator faults during a run: no job lost, no update lost, no final update twice.

use std::time::Duration;

use drover_gitlab::fake::{Fault, JobStatus, Route};

use super::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_survive_5xx_bursts_429s_slow_answers_and_dropped_connections() {
    let Some(mut env) = Env::new("faults", Settings::pool()).await else {
        return;
    };
    let status = |route, status, times| Fault::status(route, status, times);
    let delay = |route, secs, times| Fault::Delay {
        route,
        delay: Duration::from_secs(secs),
        times,
    };
    for fault in [
        status(Route::JobRequest, 500, 6),
        Fault::rate_limited(Route::JobRequest, 2, 2),
        Fault::Drop {
            route: Route::JobRequest,
            times: 1,
        },
        status(Route::JobUpdate, 502, 2),
        Fault::Drop {
            route: Route::JobUpdate,
            times: 2,
        },
        delay(Route::JobUpdate, 2, 1),
        status(Route::TracePatch, 503, 3),
        Fault::Drop {
            route: Route::TracePatch,
            times: 2,
        },
        delay(Route::TracePatch, 2, 2),
        Fault::rate_limited(Route::TracePatch, 1, 1),
        status(Route::FinalUpdate, 500, 6),
        Fault::Drop {
            route: Route::FinalUpdate,
            times: 2,
        },
        delay(Route::FinalUpdate, 2, 1),
    ] {
        env.fake.inject(fault);
    }
    env.start().await;
    let jobs: Vec<u64> = (0..3)
        .map(|j| {
            env.enqueue(job(
                &format!("chatty-{j}"),
                &["for i in $(seq 1 30); do echo \"line $i\"; sleep 0.1; done"],
            ))
        })
        .collect();
    for id in &jobs {
        let view = env.finished(*id).await;
        assert_final(&view, JobStatus::Success, None, None);
        let lines: Vec<&str> = std::str::from_utf8(&view.trace)
            .expect("a UTF-8 trace")
            .lines()
            .filter(|l| l.starts_with("line "))
            .collect();
        let expected: Vec<String> = (1..=30).map(|i| format!("line {i}")).collect();
        assert_eq!(lines, expected, "job {id}: every line once, in order");
    }
    assert_eq!(
        env.fake.pending_faults(),
        vec![],
        "every fault was met by some request"
    );
    env.finish().await;
}

/// Regression (issue #9, bug 3): when a job fails because its machine cannot be created, its trace
/// says why (GitLab Runner's "Preparation failed: …"), not only that drover could not start it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_failed_by_machine_creation_carries_the_creation_error() {
    let settings = Settings {
        image: "drover-test/no-such-image:404".to_string(),
        ..Settings::pool()
    };
    let Some(mut env) = Env::new("faults_creation", settings).await else {
        return;
    };
    env.start().await;
    let id = env.enqueue(job("never", &["echo should not run"]));
    let view = env.finished(id).await;
    assert_final(
        &view,
        JobStatus::Failed,
        Some("runner_system_failure"),
        None,
    );
    let trace = text(&view);
    assert!(
        trace.contains("Preparation failed: creating machine"),
        "{trace}"
    );
    assert!(trace.contains("no-such-image"), "{trace}");
    assert!(trace.contains("could not start this job"), "{trace}");
    env.finish().await;
}
