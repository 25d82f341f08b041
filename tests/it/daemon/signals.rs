//! Operator signals: SIGQUIT drains, SIGTERM aborts, a second SIGTERM exits at once.

use std::time::{Duration, Instant};

use drover_gitlab::fake::{Fault, JobStatus, Route};

use super::harness::*;

/// Waits until drover has taken a shutdown signal into account.
async fn shutting_down(env: &Env, state: &str) {
    eventually(&format!("status.json saying {state}"), async || {
        (env.status()?["shutdown"] == state).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigquit_lets_running_jobs_finish_takes_no_new_job_and_exits_0() {
    let Some(mut env) = Env::new("signals_quit", Settings::pool()).await else {
        return;
    };
    env.start().await;
    let running: Vec<u64> = (0..2)
        .map(|i| {
            env.enqueue(job(
                &format!("long-{i}"),
                &["echo started", "sleep 3", "echo done"],
            ))
        })
        .collect();
    for id in &running {
        env.trace_shows(*id, "\nstarted").await;
    }
    env.signal("QUIT");
    shutting_down(&env, "draining").await;
    let late = env.enqueue(job("late", &["echo should not run"]));

    let code = env.exit_code(PATIENCE).await;
    assert_eq!(code, 0, "a graceful shutdown exits 0");
    for id in &running {
        let view = env.job(*id);
        assert_final(&view, JobStatus::Success, None, None);
        assert_eq!(lines(&view, "done"), 1, "{}", text(&view));
    }
    let late = env.job(late);
    assert!(
        !late.accepted && late.status == JobStatus::Pending && late.updates.is_empty(),
        "no job is taken after SIGQUIT: {late:?}"
    );
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_aborts_running_jobs_reports_them_and_exits_within_shutdown_timeout() {
    let settings = Settings {
        shutdown_timeout: 20,
        ..Settings::pool()
    };
    let Some(mut env) = Env::new("signals_term", settings).await else {
        return;
    };
    env.start().await;
    let running: Vec<u64> = (0..2)
        .map(|i| env.enqueue(job(&format!("endless-{i}"), &["echo started", "sleep 300"])))
        .collect();
    for id in &running {
        env.trace_shows(*id, "\nstarted").await;
    }
    let machines = env.sandboxes().await;
    let asked = Instant::now();
    env.signal("TERM");
    let code = env.exit_code(Duration::from_secs(20)).await;
    assert_eq!(code, 0, "every job was reported within shutdown_timeout");
    eprintln!("SIGTERM to exit: {:?}", asked.elapsed());
    for id in &running {
        let view = env.job(*id);
        assert_final(
            &view,
            JobStatus::Failed,
            Some("runner_system_failure"),
            None,
        );
    }
    // A forceful shutdown leaves the machines; the next start adopts them, and its drained
    // shutdown removes them.
    assert_eq!(env.sandboxes().await, machines);
    env.start().await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_exits_at_once_and_the_restart_reports_the_job() {
    let settings = Settings {
        shutdown_timeout: 120,
        ..Settings::pool()
    };
    let Some(mut env) = Env::new("signals_term_twice", settings).await else {
        return;
    };
    env.start().await;
    let id = env.enqueue(job("endless", &["echo started", "sleep 300"]));
    env.trace_shows(id, "\nstarted").await;
    // GitLab is slow to take the final update: the first SIGTERM's shutdown hangs on it.
    env.fake.inject(Fault::Delay {
        route: Route::FinalUpdate,
        delay: Duration::from_secs(300),
        times: 1,
    });
    env.signal("TERM");
    eventually("the final update sent", async || {
        env.fake
            .requests()
            .iter()
            .any(|r| r.method == "PUT" && r.json().is_some_and(|j| j["state"] == "failed"))
            .then_some(())
    })
    .await;
    assert!(!env.has_exited(), "drover waits for the final update");
    env.signal("TERM");
    let code = env.exit_code(Duration::from_secs(5)).await;
    assert_ne!(code, 0, "an interrupted shutdown is not a clean exit");
    assert!(!env.job(id).status.is_finished());

    // The next start sends the final update again, and only that.
    env.start().await;
    let view = env.finished(id).await;
    assert_final(
        &view,
        JobStatus::Failed,
        Some("runner_system_failure"),
        None,
    );
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_reports_a_job_still_waiting_for_its_machine() {
    let settings = Settings {
        // No sandbox can be made (the image cannot be pulled here): the job waits for a machine.
        image: "drover-test/missing:1".into(),
        ..Settings::pool()
    };
    let Some(mut env) = Env::new("signals_term_waiting", settings).await else {
        return;
    };
    env.start().await;
    let id = env.enqueue(job("waiting", &["echo never runs"]));
    env.wait_job(id, "acceptance", |j| j.accepted).await;
    eventually("the job waiting for a machine", async || {
        (env.status()?["jobs"][0]["state"] == "queued").then_some(())
    })
    .await;
    env.signal("TERM");
    let code = env.exit_code(PATIENCE).await;
    assert_eq!(code, 0, "the job was reported within shutdown_timeout");
    let view = env.job(id);
    assert_final(
        &view,
        JobStatus::Failed,
        Some("runner_system_failure"),
        None,
    );
    assert!(
        text(&view).contains("could not start this job"),
        "{}",
        text(&view)
    );
    env.start().await;
    env.finish().await;
}
