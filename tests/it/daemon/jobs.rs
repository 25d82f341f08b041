//! Jobs end to end: how each ends, what GitLab is told, what the trace says.

use std::time::Duration;

use drover_gitlab::fake::{Fault, JobStatus, Route};

use super::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_succeed_and_fail_with_their_exit_code_and_after_script() {
    let Some(mut env) = Env::new("jobs_outcomes", Settings::pool()).await else {
        return;
    };
    env.start().await;
    let ok = env.enqueue(
        job("ok", &["echo building widget", "echo tests passed"])
            .after_script(["echo cleaning up"]),
    );
    let failing = env.enqueue(
        job(
            "failing",
            &["echo about to fail", "exit 3", "echo never printed"],
        )
        .after_script(["echo after the failure"]),
    );

    let ok = env.finished(ok).await;
    assert_final(&ok, JobStatus::Success, None, None);
    let trace = text(&ok);
    for line in ["building widget", "tests passed", "cleaning up"] {
        assert_eq!(lines(&ok, line), 1, "{line:?} once in:\n{trace}");
    }
    assert_eq!(count(&ok.trace, "Job succeeded"), 1, "{trace}");
    assert!(
        trace.find("\ntests passed") < trace.find("\ncleaning up"),
        "after_script runs after the script:\n{trace}"
    );

    let failing = env.finished(failing).await;
    assert_final(&failing, JobStatus::Failed, Some("script_failure"), Some(3));
    let trace = text(&failing);
    assert!(trace.contains("about to fail"), "{trace}");
    assert!(
        !trace.contains("never printed"),
        "the script stops at the failure:\n{trace}"
    );
    assert!(
        trace.contains("after the failure"),
        "after_script runs on failure too:\n{trace}"
    );
    assert!(trace.contains("exit code 3"), "{trace}");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_its_timeout_fails_with_job_execution_timeout_and_runs_after_script() {
    let Some(mut env) = Env::new("jobs_timeout", Settings::pool()).await else {
        return;
    };
    env.start().await;
    let id = env.enqueue(
        job("slow", &["echo started", "sleep 60", "echo never printed"])
            .after_script(["echo after the timeout"])
            .timeout(3),
    );
    let view = within(PATIENCE, "the timeout", env.finished(id)).await;
    assert_final(
        &view,
        JobStatus::Failed,
        Some("job_execution_timeout"),
        None,
    );
    let trace = text(&view);
    assert_eq!(lines(&view, "started"), 1, "{trace}");
    assert_eq!(lines(&view, "never printed"), 0, "{trace}");
    assert_eq!(lines(&view, "after the timeout"), 1, "{trace}");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_canceled_mid_run_stops_runs_after_script_and_ends_canceled() {
    let Some(mut env) = Env::new("jobs_cancel", Settings::pool()).await else {
        return;
    };
    env.start().await;
    // Output every half second: GitLab's cancel reaches drover with the answer to a trace patch
    // (a silent job would hear of it with the keep-alive, 30 s later).
    let id = env.enqueue(
        job(
            "cancel-me",
            &[
                "echo started",
                "for i in $(seq 1 120); do echo tick; sleep 0.5; done",
                "echo never printed",
            ],
        )
        .after_script(["echo after the cancel"]),
    );
    env.trace_shows(id, "\nstarted").await;
    env.fake.cancel_job(id);
    assert_eq!(
        env.job(id).status,
        JobStatus::Canceling,
        "drover declares cancel_gracefully: GitLab waits for it"
    );
    let view = env.finished(id).await;
    // GitLab does not list job_canceled among the fake's failure reasons: the mapper's fallback.
    assert_final(&view, JobStatus::Canceled, Some("unknown_failure"), None);
    let trace = text(&view);
    assert_eq!(lines(&view, "never printed"), 0, "{trace}");
    assert_eq!(
        lines(&view, "after the cancel"),
        1,
        "after_script runs on cancel:\n{trace}"
    );
    assert!(trace.contains("canceled"), "{trace}");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masked_variables_never_reach_the_trace_even_split_across_writes() {
    const SECRET: &str = "Sup3rS3cretValue42";
    let settings = Settings {
        json_logs: true,
        ..Settings::pool()
    };
    let Some(mut env) = Env::new("jobs_masked", settings).await else {
        return;
    };
    env.start().await;
    let id = env.enqueue(
        job(
            "masked",
            &[
                "echo \"whole: $DEPLOY_KEY\"",
                // The engine cuts a line into log messages of 16 KiB: this one is cut after the
                // first 8 characters of the secret, so drover gets the secret in two pieces.
                "printf 'split: '; head -c 16369 /dev/zero | tr '\\0' x; \
                 printf '%s' \"$DEPLOY_KEY\"; echo ' :end'",
                "echo \"job token: $CI_JOB_TOKEN\"",
            ],
        )
        .masked_variable("DEPLOY_KEY", SECRET),
    );
    let view = env.finished(id).await;
    assert_final(&view, JobStatus::Success, None, None);
    let trace = text(&view);
    assert_eq!(lines(&view, "whole: [MASKED]"), 1, "{trace}");
    let split = format!("split: {}[MASKED] :end", "x".repeat(16369));
    assert_eq!(lines(&view, &split), 1, "{trace}");
    assert_eq!(lines(&view, "job token: glcbt-[MASKED]"), 1, "{trace}");
    for part in [SECRET, &SECRET[..8], &SECRET[8..]] {
        assert!(
            !trace.contains(part),
            "{part:?} leaked into the trace:\n{trace}"
        );
    }
    assert!(
        !trace.contains(&view.token),
        "the job token leaked:\n{trace}"
    );
    // log_format = "json": every line drover logs is a JSON object.
    let log = env.last_log();
    assert!(log.lines().count() > 3, "drover logged:\n{log}");
    for line in log.lines() {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            value.get("level").is_some() && value.get("fields").is_some(),
            "{line}"
        );
    }
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_is_reachable_by_its_alias() {
    let Some(mut env) = Env::new("jobs_service", Settings::pool()).await else {
        return;
    };
    env.start().await;
    let web = drover_gitlab::api::Service {
        name: drover_docker::testing::BUSYBOX_IMAGE.into(),
        alias: "web".into(),
        command: vec![
            "sh".into(),
            "-c".into(),
            "mkdir -p /www && echo hello-from-the-service > /www/index.html && exec httpd -f -p 8080 -h /www"
                .into(),
        ],
        ..Default::default()
    };
    let id = env.enqueue(
        job(
            "service",
            &["for i in $(seq 1 100); do wget -q -O - http://web:8080/ && exit 0; sleep 0.1; done; exit 1"],
        )
        .service_full(web),
    );
    let view = env.finished(id).await;
    assert_final(&view, JobStatus::Success, None, None);
    assert_eq!(lines(&view, "hello-from-the-service"), 1, "{}", text(&view));
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plain_docker_executor_runs_a_job_without_a_machine() {
    let Some(mut env) = Env::new("jobs_plain_docker", Settings::docker()).await else {
        return;
    };
    env.start().await;
    let id = env.enqueue(job("plain", &["echo on the local engine"]));
    let view = env.finished(id).await;
    assert_final(&view, JobStatus::Success, None, None);
    let trace = text(&view);
    assert_eq!(lines(&view, "on the local engine"), 1, "{trace}");
    assert!(
        !trace.contains("on machine"),
        "no machine is involved:\n{trace}"
    );
    assert!(env.sandboxes().await.is_empty(), "no sandbox is created");
    let status = env.status().expect("status.json");
    assert_eq!(status["machines"], serde_json::json!([]), "{status}");
    env.finish().await;
}

/// Without its journal a crash would run the script a second time: a job whose journal cannot be
/// written is failed without running, and its trace says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_journal_cannot_be_written_fails_without_running_its_script() {
    let Some(mut env) = Env::new("jobs_unrecorded", Settings::pool()).await else {
        return;
    };
    // Job requests are held up: the job's folder is made before drover gets the job (start-up
    // would remove a folder made earlier).
    env.fake.inject(Fault::Delay {
        route: Route::JobRequest,
        delay: Duration::from_secs(1),
        times: 20,
    });
    env.start().await;
    let id = env.enqueue(job("unrecorded", &["echo \"script ran: $((6 * 7))\""]));
    // A directory where the journal goes: it cannot be written.
    let blocker = env
        .state_dir()
        .join("jobs")
        .join(id.to_string())
        .join("events.jsonl")
        .join("blocker");
    std::fs::create_dir_all(&blocker).unwrap();
    let view = env.finished(id).await;
    let trace = text(&view);
    assert_final(
        &view,
        JobStatus::Failed,
        Some("runner_system_failure"),
        None,
    );
    assert!(trace.contains("cannot keep this job's record"), "{trace}");
    assert_eq!(lines(&view, "script ran: 42"), 0, "{trace}");
    env.finish().await;
}

/// The name of a running container whose name contains `part`, if there is one.
async fn running_container(env: &Env, part: &str) -> Option<(String, String)> {
    let options = bollard::query_parameters::ListContainersOptions {
        filters: Some(std::collections::HashMap::from([(
            "name".to_string(),
            vec![part.to_string()],
        )])),
        ..Default::default()
    };
    let found = env.docker.list_containers(Some(options)).await.ok()?;
    let container = found.into_iter().next()?;
    Some((container.id?, container.names?.into_iter().next()?))
}

/// The second job on a sandbox runs by exec in the build container started during the first;
/// a `kill -9` of drover mid-step re-attaches to it: the step runs once, the trace continues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_on_a_warm_sandbox_runs_by_exec_and_survives_a_kill_9_mid_step() {
    let sync = SyncDir::new();
    let settings = Settings {
        limit: 1,
        concurrent: 1,
        docker_extra: sync.volume(),
        ..Settings::pool()
    };
    let Some(mut env) = Env::new("jobs_warm_exec", settings).await else {
        return;
    };
    env.start().await;
    let first = env.enqueue(job("first", &["echo first-$((1))"]));
    assert_final(&env.finished(first).await, JobStatus::Success, None, None);

    let id = env.enqueue(job(
        "warm",
        &[
            "echo started >> /sync/runs",
            "echo host-$(hostname)",
            "for i in $(seq 1 5); do echo \"line $i\"; done",
            "touch /sync/ready",
            "while [ ! -e /sync/go ]; do sleep 0.1; done",
            "for i in $(seq 6 9); do echo \"line $i\"; done",
        ],
    ));
    sync.wait_for("ready").await;
    let (container, _) = running_container(&env, &format!("-job-{id}-warm"))
        .await
        .expect("the job runs in the sandbox's claimed warm container");
    env.crash().await;
    assert!(!env.job(id).status.is_finished());

    env.start().await;
    sync.signal("go");
    let view = env.finished(id).await;
    let trace = text(&view);
    assert_final(&view, JobStatus::Success, None, None);
    assert!(
        trace.contains(&format!("host-{}", &container[..12])),
        "{trace}"
    );
    for i in 1..=9 {
        assert_eq!(
            lines(&view, &format!("line {i}")),
            1,
            "line {i} once:\n{trace}"
        );
    }
    let runs = std::fs::read_to_string(sync.path().join("runs")).unwrap();
    assert_eq!(runs, "started\n", "the step ran once:\n{trace}");
    env.finish().await;
}

/// A new sandbox starts its warm build container before it is ready, so its first job runs by
/// exec too: in a MaxBuilds 1 pool, the only job a sandbox gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_sandboxs_first_job_runs_in_the_warm_container_started_with_it() {
    first_job_runs_warm("jobs_first_warm", false).await;
}

/// With `"/cache"` (what `register` writes), that container has fresh caches: the job's project is
/// not known before it comes, and the sandbox will take no other job. The job's local cache is
/// saved there, and nothing is left once the sandbox is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_max_builds_1_sandboxs_job_with_a_cache_volume_runs_warm_on_a_fresh_cache() {
    first_job_runs_warm("jobs_first_warm_cache", true).await;
}

async fn first_job_runs_warm(name: &str, cache: bool) {
    let sync = SyncDir::new();
    let more_volumes = if cache { ", \"/cache\"" } else { "" };
    let settings = Settings {
        limit: 1,
        concurrent: 1,
        max_builds: 1,
        docker_extra: sync
            .volume()
            .replace("/sync\"]", &format!("/sync\"{more_volumes}]")),
        ..Settings::pool()
    };
    let Some(mut env) = Env::new(name, settings).await else {
        return;
    };
    env.start().await;
    let mut script = vec![
        "touch /sync/ready",
        "while [ ! -e /sync/go ]; do sleep 0.1; done",
    ];
    if cache {
        script.extend([
            "echo cache-entries-$(ls -A /cache | wc -l)",
            "mkdir -p deps && echo local > deps/lib.txt",
        ]);
    }
    script.push("echo first-done");
    let mut template = job("first", &script);
    if cache {
        template.response.cache.push(drover_gitlab::api::Cache {
            key: "deps".to_string(),
            untracked: false,
            paths: vec!["deps".to_string()],
            policy: "push".to_string(),
            when: "on_success".to_string(),
            fallback_keys: vec![],
        });
    }
    let id = env.enqueue(template);
    sync.wait_for("ready").await;
    let warm = running_container(&env, &format!("-job-{id}-warm")).await;
    sync.signal("go");
    let view = env.finished(id).await;
    assert_final(&view, JobStatus::Success, None, None);
    assert!(
        warm.is_some(),
        "the sandbox's first job runs in its claimed warm container:\n{}",
        text(&view)
    );
    assert_eq!(lines(&view, "first-done"), 1);
    if cache {
        assert_eq!(lines(&view, "cache-entries-0"), 1, "{}", text(&view));
        assert!(text(&view).contains("Created cache"), "{}", text(&view));
    }
    // Checks that nothing of the runner is left, by label and by name: no volume of the
    // job's project was made behind the fresh cache's back.
    env.finish().await;
}
