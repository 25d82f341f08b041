//! Operations: `drover status`, `/metrics`, live reloads.

use drover_gitlab::fake::JobStatus;

use super::harness::*;

/// `drover status` exits 5 when no daemon runs for the config.
const NOT_RUNNING: i32 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_metrics_show_the_machines_and_jobs() {
    let settings = Settings {
        idle_count: 2,
        ..Settings::pool()
    };
    let Some(mut env) = Env::new("ops_status", settings).await else {
        return;
    };
    let (code, out) = env.status_command(false).await;
    assert_eq!(code, NOT_RUNNING, "{out}");
    assert!(out.contains("not running"), "{out}");

    env.start().await;
    let warm = env.sandboxes_become(2).await;
    let id = env.enqueue(job(
        "observed",
        &[
            "echo started",
            "for i in $(seq 1 120); do echo tick; sleep 0.5; done",
        ],
    ));
    env.trace_shows(id, "\nstarted").await;
    // status.json is rewritten at least every few seconds.
    eventually("the status file showing the job", async || {
        let status = env.status()?;
        (status["jobs"][0]["state"] == "running" && status["runners"][0]["idle"] == 2).then_some(())
    })
    .await;

    let (code, out) = env.status_command(false).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("is running"), "{out}");
    assert!(out.contains("1 busy") && out.contains("2 idle"), "{out}");
    for machine in &warm {
        assert!(out.contains(machine.as_str()), "{machine} in:\n{out}");
    }
    assert!(out.contains(&id.to_string()), "{out}");
    let (code, json) = env.status_command(true).await;
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&json).expect("status --json");
    assert_eq!(json["running"], true);
    assert_eq!(
        json["status"]["machines"].as_array().map(Vec::len),
        Some(3),
        "{json}"
    );

    let metrics = env.metrics().await;
    let runner = &env.name;
    for line in [
        format!("drover_machines{{runner=\"{runner}\",state=\"idle\"}} 2"),
        format!("drover_machines{{runner=\"{runner}\",state=\"busy\"}} 1"),
        format!("drover_jobs{{runner=\"{runner}\",state=\"running\"}} 1"),
        format!("drover_machine_creations_total{{runner=\"{runner}\"}} 3"),
        format!("drover_job_requests_total{{runner=\"{runner}\",outcome=\"job\"}} 1"),
        format!("drover_limit{{runner=\"{runner}\"}} 4"),
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} in /metrics:\n{metrics}"
        );
    }
    assert!(
        metrics.contains("drover_job_wait_seconds_bucket"),
        "{metrics}"
    );

    env.fake.cancel_job(id);
    let view = env.finished(id).await;
    assert_eq!(view.status, JobStatus::Canceled);
    env.quit().await;
    let (code, out) = env.status_command(false).await;
    assert_eq!(code, NOT_RUNNING, "{out}");
    assert!(
        out.contains("not running") && out.contains("0 machines"),
        "{out}"
    );
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_and_an_edited_config_file_reload_live() {
    let settings = Settings {
        idle_count: 1,
        idle_time: 600,
        ..Settings::pool()
    };
    let Some(mut env) = Env::new("ops_reload", settings).await else {
        return;
    };
    env.start().await;
    env.sandboxes_become(1).await;

    // SIGHUP: a higher IdleCount warms more machines.
    env.settings.idle_count = 3;
    env.write_config();
    env.signal("HUP");
    let three = env.sandboxes_become(3).await;

    // No signal: drover notices the edited file by itself. A lower limit removes the surplus.
    env.settings.limit = 1;
    env.write_config();
    let one = env.sandboxes_become(1).await;
    assert!(three.contains(&one[0]), "{one:?} of {three:?}");
    let log = env.last_log();
    assert!(log.matches("reloading the config").count() >= 2, "{log}");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_edited_while_drover_was_down_applies_at_start() {
    // Machines stay across the first stop; the second start finds a config asking for more.
    let settings = Settings {
        idle_count: 1,
        drain: false,
        ..Settings::pool()
    };
    let Some(mut env) = Env::new("ops_restart_reload", settings).await else {
        return;
    };
    env.start().await;
    let first = env.sandboxes_become(1).await;
    env.quit().await;
    assert_eq!(
        env.sandboxes().await,
        first,
        "a graceful stop keeps the machines"
    );

    env.settings.idle_count = 3;
    env.settings.drain = true;
    env.write_config();
    env.start().await;
    let three = env.sandboxes_become(3).await;
    assert!(
        three.contains(&first[0]),
        "the kept machine is adopted: {three:?}"
    );
    let log = env.last_log();
    assert!(
        log.contains("the config file changed since the journal was written"),
        "{log}"
    );
    assert!(!log.contains("no machine provider"), "{log}");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_deleted_while_drover_was_down_has_its_machines_removed() {
    let settings = Settings {
        idle_count: 1,
        drain: false,
        ..Settings::pool()
    };
    let Some(mut env) = Env::new("ops_deleted_runner", settings).await else {
        return;
    };
    env.start().await;
    env.sandboxes_become(1).await;
    env.quit().await;
    assert_eq!(
        env.sandboxes().await.len(),
        1,
        "a graceful stop keeps the machines"
    );

    // The file now holds another runner only (a plain docker one, with the same token so the
    // engine objects stay this test's): the first runner's settings exist only in drover's copy.
    let pool_runner = env.name.clone();
    env.name = format!("{pool_runner}-plain");
    env.settings.pool = false;
    env.write_config();
    env.start().await;
    env.sandboxes_become(0).await;
    let log = env.last_log();
    assert!(!log.contains("no machine provider"), "{log}");
    assert!(!log.contains("none of its settings are kept"), "{log}");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_waiting_on_a_silent_engine_does_not_stall_another_runners_jobs() {
    let Some(mut env) = Env::new("ops_slow_reload", Settings::docker()).await else {
        return;
    };
    // An engine that takes connections and never answers: a provider connecting to it waits
    // for the client's timeout (minutes).
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback listener");
    let address = silent.local_addr().expect("its address");
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
            let _ = accepted_tx.send(());
        }
    });
    env.start().await;

    // The reload adds a pool runner whose machines live on the silent engine.
    let token = env.fake.create_runner_token();
    env.settings.runner_extra = format!(
        "\n[[runners]]\n\
         \x20 name = \"silent-engine\"\n\
         \x20 url = \"{url}\"\n\
         \x20 token = \"{token}\"\n\
         \x20 executor = \"docker+machine\"\n\
         \x20 [runners.docker]\n\
         \x20   image = \"{image}\"\n\
         \x20 [runners.machine]\n\
         \x20   Provider = \"docker\"\n\
         \x20   DockerHost = \"tcp://{address}\"\n\
         \x20   IdleCount = 1\n\
         \x20   MachineName = \"silent-%s\"\n",
        url = env.fake.url(),
        image = env.settings.image,
    );
    env.write_config();
    env.signal("HUP");
    within(
        PATIENCE,
        "the reload connecting to the silent engine",
        accepted.recv(),
    )
    .await;

    // While that connection hangs, the first runner still takes and runs a job.
    let id = env.enqueue(job("beside-a-reload", &["echo served meanwhile"]));
    let view = env.finished(id).await;
    assert_eq!(view.status, JobStatus::Success, "{}", text(&view));
    assert!(text(&view).contains("served meanwhile"), "{}", text(&view));
    let log = env.last_log();
    assert!(
        !log.contains("reloading the config"),
        "the reload is still waiting for the engine:\n{log}"
    );
    // Logs name a runner by its name and GitLab's short token.
    let received = log
        .lines()
        .find(|l| l.contains("received a job"))
        .unwrap_or_else(|| panic!("a received job in the log:\n{log}"));
    let label = received
        .split_whitespace()
        .find_map(|w| w.strip_prefix("runner="))
        .unwrap_or_else(|| panic!("a runner named in {received:?}"));
    let (name, short) = label.split_once('/').expect("name/short-token");
    assert_eq!(name, env.name, "{received}");
    assert!(
        short.len() == 9 && env.token.contains(short),
        "{short:?} is not the start of the runner's token: {received}"
    );
    env.finish().await;
}
