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

/// A runner whose Docker engine does not answer when drover starts does not stop drover: it waits
/// (its job stays queued at GitLab, nothing of it runs) while the other runner works, and once its
/// engine answers drover builds its adapters and runs its job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_whose_engine_is_down_at_start_waits_while_the_other_works() {
    runner_with_an_engine_down("faults_engine_down", false).await;
}

/// The same for a runner a reload adds while its engine is down: it waits and is retried as at
/// start-up, instead of being scheduled without a provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_a_reload_adds_while_its_engine_is_down_waits_and_is_retried() {
    runner_with_an_engine_down("faults_reload_engine_down", true).await;
}

async fn runner_with_an_engine_down(name: &str, by_reload: bool) {
    let Some(mut env) = Env::new(name, Settings::pool()).await else {
        return;
    };
    if by_reload {
        env.start().await;
    }
    // The second runner's engine: a loopback port nothing listens on until the proxy starts.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let late_token = env.fake.create_runner_token();
    let late_name = format!("{}-late", env.name);
    env.settings.runner_extra = format!(
        "\n[[runners]]\n\
         \x20 name = \"{late_name}\"\n\
         \x20 url = \"{url}\"\n\
         \x20 token = \"{late_token}\"\n\
         \x20 executor = \"docker+machine\"\n\
         \x20 limit = 1\n\
         \x20 [runners.docker]\n\
         \x20   image = \"{image}\"\n\
         \x20   pull_policy = [\"if-not-present\"]\n\
         \x20 [runners.machine]\n\
         \x20   Provider = \"docker\"\n\
         \x20   DockerHost = \"tcp://127.0.0.1:{port}\"\n\
         \x20   IdleCount = 0\n\
         \x20   IdleTime = 600\n\
         \x20   MachineName = \"late-%s\"\n",
        url = env.fake.url(),
        image = env.settings.image,
    );
    env.write_config();
    if by_reload {
        env.signal("HUP");
        eventually("the added runner waits for its engine", async || {
            env.last_log()
                .contains("cannot build the runner's adapters")
                .then_some(())
        })
        .await;
    } else {
        env.start().await;
        assert!(
            env.last_log()
                .contains("cannot build the runner's adapters"),
            "{}",
            env.last_log()
        );
    }

    let waiting = env.enqueue(job("waits", &["echo late runner ran"]).for_runner(&late_token));
    let healthy = env.enqueue(job("healthy", &["echo healthy runner ran"]).for_runner(&env.token));
    let view = env.finished(healthy).await;
    assert_final(&view, JobStatus::Success, None, None);
    assert!(text(&view).contains("healthy runner ran"));
    assert_eq!(
        env.job(waiting).status,
        JobStatus::Pending,
        "nothing asks GitLab for the waiting runner's jobs"
    );
    let late_short = drover_core::config::machine_key("r_droverTEST01", env.fake.url(), &late_name);
    assert!(
        objects_of(&env.docker, &late_short).await.is_empty(),
        "nothing of the waiting runner was made"
    );

    // The engine answers: drover retries, builds the runner and runs its job.
    let proxy = tokio::spawn(proxy_to_the_engine(port));
    let view = env.finished(waiting).await;
    assert_final(&view, JobStatus::Success, None, None);
    assert!(text(&view).contains("late runner ran"));
    assert!(env.last_log().contains("built the runner's adapters"));

    let docker = env.docker.clone();
    env.finish().await;
    assert!(
        objects_of(&docker, &late_short).await.is_empty(),
        "the late runner's sandbox was drained"
    );
    proxy.abort();
}

/// Forwards every connection to `127.0.0.1:port` to the test's Docker engine.
async fn proxy_to_the_engine(port: u16) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the proxy's port is still free");
    let host = std::env::var("DOCKER_HOST").unwrap_or_default();
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        let host = host.clone();
        tokio::spawn(async move {
            if let Some(addr) = host.strip_prefix("tcp://") {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(addr).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
                return;
            }
            let path = host
                .strip_prefix("unix://")
                .unwrap_or("/var/run/docker.sock");
            if let Ok(mut outbound) = tokio::net::UnixStream::connect(path).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}
