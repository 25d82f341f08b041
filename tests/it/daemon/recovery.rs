//! Recovery: `kill -9` at any point, a restart, and nothing is lost, leaked or reported twice.

use std::time::Duration;

use drover_gitlab::api::Artifact;
use drover_gitlab::fake::{Fault, JobStatus, Route};

use super::harness::*;

/// The lines of the script's own output in a trace (not drover's framing, not the echo of the
/// commands).
fn output_lines(trace: &str) -> Vec<&str> {
    trace
        .lines()
        .filter(|l| l.starts_with("line ") || l.starts_with("held back:"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_survives_kill_9_with_its_full_trace_and_one_final_update() {
    const SECRET: &str = "Sup3rS3cretValue42";
    let Some(mut env) = Env::new("recovery_job", Settings::pool()).await else {
        return;
    };
    env.start().await;
    let id = env.enqueue(
        job(
            "survivor",
            &[
                "for i in $(seq 1 10); do echo \"line $i\"; sleep 0.05; done",
                // The engine cuts a line into log messages of 16 KiB: this one after the first 8
                // characters of the secret. drover dies in the pause that follows, while its
                // redaction holds those 8 characters back.
                "printf 'held back: '; head -c 16365 /dev/zero | tr '\\0' x; \
                 printf '%s' \"${DEPLOY_KEY%??????????}\"; sleep 8; \
                 printf '%s :end\\n' \"${DEPLOY_KEY#????????}\"",
                "for i in $(seq 11 20); do echo \"line $i\"; sleep 0.05; done",
            ],
        )
        .masked_variable("DEPLOY_KEY", SECRET),
    );
    // GitLab has the line up to the held-back start of the secret, and drover persisted at least
    // as much.
    let filler = format!("\nheld back: {}", "x".repeat(16365));
    let uploaded = env.trace_shows(id, &filler).await;
    assert!(
        !contains(&uploaded.trace, &SECRET[..3]),
        "{}",
        text(&uploaded)
    );
    let uploaded = uploaded.trace.len() as u64;
    eventually("the trace persisted past what GitLab has", async || {
        let progress = env.progress(id)?;
        (progress["trace_len"].as_u64()? >= uploaded).then_some(())
    })
    .await;
    env.crash().await;
    assert!(
        !env.job(id).status.is_finished(),
        "the crash came before the job's end"
    );

    env.start().await;
    let view = env.finished(id).await;
    assert_final(&view, JobStatus::Success, None, None);
    let trace = text(&view);
    let mut expected: Vec<String> = (1..=10).map(|i| format!("line {i}")).collect();
    expected.push(format!("held back: {}[MASKED] :end", "x".repeat(16365)));
    expected.extend((11..=20).map(|i| format!("line {i}")));
    assert_eq!(
        output_lines(&trace),
        expected,
        "every line once, in order, the secret masked across the crash:\n{trace}"
    );
    for part in [SECRET, &SECRET[..8], &SECRET[8..]] {
        assert!(!trace.contains(part), "{part:?} leaked:\n{trace}");
    }
    // drover's framing: once each, and the restart said at the end.
    assert_eq!(count(&view.trace, "Running with drover"), 1, "{trace}");
    assert_eq!(count(&view.trace, "Job succeeded"), 1, "{trace}");
    let restarted = trace
        .find("drover restarted while this job ran")
        .unwrap_or_else(|| panic!("the trace says drover restarted:\n{trace}"));
    assert!(trace.find("line 20") < Some(restarted), "{trace}");
    env.finish().await;
}

/// Regression: a job accepted and placed whose script had not started when drover died was failed
/// (`runner_system_failure`, "the job's containers are gone"). Now it is started after the restart,
/// once. drover dies while it downloads the job's dependencies (GitLab holds the download), the
/// last thing before the script's container is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_before_the_script_started_starts_the_job_once_after_the_restart() {
    let Some(mut env) = Env::new("recovery_unstarted", Settings::pool()).await else {
        return;
    };
    env.start().await;
    let build = env.enqueue(
        job("build", &["mkdir -p out", "echo built > out/result"]).artifact(Artifact {
            name: "out".into(),
            paths: vec!["out/".into()],
            when: "on_success".into(),
            expire_in: "1 week".into(),
            artifact_type: "archive".into(),
            artifact_format: "zip".into(),
            ..Default::default()
        }),
    );
    assert_final(&env.finished(build).await, JobStatus::Success, None, None);
    env.fake.inject(Fault::Delay {
        route: Route::ArtifactDownload,
        delay: Duration::from_secs(300),
        times: 1,
    });
    let id = env.enqueue(
        job(
            "test",
            &["cat out/result", "echo \"script ran: $((6 * 7))\""],
        )
        .dependency(build, "build"),
    );
    eventually("the dependency's download under way", async || {
        env.fake
            .requests()
            .iter()
            .any(|r| r.method == "GET" && r.path == format!("/api/v4/jobs/{build}/artifacts"))
            .then_some(())
    })
    .await;
    env.crash().await;
    assert!(!env.job(id).status.is_finished());

    env.start().await;
    let view = env.finished(id).await;
    let trace = text(&view);
    assert_final(&view, JobStatus::Success, None, None);
    assert_eq!(lines(&view, "script ran: 42"), 1, "{trace}");
    assert_eq!(lines(&view, "built"), 1, "{trace}");
    assert!(
        trace.contains("restarted before this job's script started"),
        "{trace}"
    );
    assert_eq!(final_updates(&view).len(), 1, "{:?}", view.updates);
    env.finish().await;
}

/// Regression: after a `kill -9` mid-script, the script's output appeared twice in the trace.
/// drover dies right after the script wrote a burst of lines (most likely before it stored them);
/// the restarted drover continues the trace where GitLab's copy ends, and no step runs twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_script_continues_the_trace_without_repeating_a_line() {
    let sync = SyncDir::new();
    let settings = Settings {
        docker_extra: sync.volume(),
        ..Settings::pool()
    };
    let Some(mut env) = Env::new("recovery_midscript", settings).await else {
        return;
    };
    env.start().await;
    let id = env.enqueue(job(
        "bursty",
        &[
            "echo started >> /sync/runs",
            "for i in $(seq 1 5); do echo \"line $i\"; done",
            "touch /sync/ready",
            "for i in $(seq 6 40); do echo \"line $i\"; done",
            "while [ ! -e /sync/go ]; do sleep 0.1; done",
            "for i in $(seq 41 45); do echo \"line $i\"; done",
        ],
    ));
    sync.wait_for("ready").await;
    env.crash().await;

    env.start().await;
    sync.signal("go");
    let view = env.finished(id).await;
    let trace = text(&view);
    assert_final(&view, JobStatus::Success, None, None);
    let expected: Vec<String> = (1..=45).map(|i| format!("line {i}")).collect();
    assert_eq!(
        output_lines(&trace),
        expected,
        "every line once, in order:\n{trace}"
    );
    let runs = std::fs::read_to_string(sync.path().join("runs")).unwrap();
    assert_eq!(runs, "started\n", "the script ran once");
    assert_eq!(count(&view.trace, "Job succeeded"), 1, "{trace}");
    assert_eq!(final_updates(&view).len(), 1, "{:?}", view.updates);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_containers_vanished_while_drover_was_down_fails_as_a_system_failure() {
    let Some(mut env) = Env::new("recovery_vanished", Settings::pool()).await else {
        return;
    };
    env.start().await;
    let id = env.enqueue(job("vanishing", &["echo started", "sleep 60"]));
    env.trace_shows(id, "\nstarted").await;
    env.crash().await;
    let removed = remove_job_containers(&env.docker, &env.short, id).await;
    assert!(removed > 0, "the job's containers were running");

    env.start().await;
    let view = env.finished(id).await;
    assert_final(
        &view,
        JobStatus::Failed,
        Some("runner_system_failure"),
        None,
    );
    let trace = text(&view);
    assert!(trace.contains("containers are gone"), "{trace}");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_during_the_final_update_repeats_the_same_final_update() {
    let Some(mut env) = Env::new("recovery_final", Settings::pool()).await else {
        return;
    };
    // GitLab answers the first final updates 202 (trace not persisted yet): drover retries.
    env.fake.inject(Fault::FinalNotCompleted { times: 2 });
    env.start().await;
    let id = env.enqueue(job("fails", &["echo about to fail", "exit 3"]));
    env.wait_job(id, "a first final update", |j| !final_updates(j).is_empty())
        .await;
    env.crash().await;

    // The job's containers are gone (it ended): running it again could only say
    // runner_system_failure. The outcome saved before the final update is what is reported.
    env.start().await;
    let view = env.finished(id).await;
    assert_final(&view, JobStatus::Failed, Some("script_failure"), Some(3));
    assert!(final_updates(&view).len() >= 2, "{:?}", view.updates);
    assert_eq!(count(&view.trace, "exit code 3"), 1, "{}", text(&view));
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_right_after_the_final_update_sends_no_second_one() {
    let Some(mut env) = Env::new("recovery_after_final", Settings::pool()).await else {
        return;
    };
    env.start().await;
    let id = env.enqueue(job("quick", &["echo done"]));
    // Die the moment GitLab accepts the final update: most likely before drover journaled the
    // job's end.
    env.finished(id).await;
    env.crash().await;

    env.start().await;
    // The restarted drover settles the job without a word to GitLab about it.
    eventually("the job settled", async || {
        let status = env.status()?;
        let settled = status["jobs"] == serde_json::json!([]) && status["updated_at"] != "";
        (settled && !env.state_dir().join("jobs").join(id.to_string()).exists()).then_some(())
    })
    .await;
    let log = env.last_log();
    let path = ["GitLab has closed it", "already reported"]
        .into_iter()
        .find(|p| log.contains(p));
    eprintln!("the restart found the job: {path:?}");
    let view = env.job(id);
    assert_final(&view, JobStatus::Success, None, None);
    assert_eq!(final_updates(&view).len(), 1, "{:?}", view.updates);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_report_cut_short_by_a_crash_is_sent_after_the_restart() {
    let settings = Settings {
        // No sandbox can be made (the image cannot be pulled here): jobs wait for a machine.
        image: "drover-test/missing:1".into(),
        shutdown_timeout: 120,
        ..Settings::pool()
    };
    let Some(mut env) = Env::new("recovery_report", settings).await else {
        return;
    };
    env.start().await;
    let id = env.enqueue(job("stranded", &["echo never runs"]));
    eventually("the job waiting for a machine", async || {
        (env.status()?["jobs"][0]["state"] == "queued").then_some(())
    })
    .await;
    // SIGTERM fails the waiting job; GitLab is slow to take the report, and drover dies meanwhile.
    env.fake.inject(Fault::Delay {
        route: Route::FinalUpdate,
        delay: Duration::from_secs(300),
        times: 1,
    });
    env.signal("TERM");
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
        text(&view).contains("could not start this job"),
        "{}",
        text(&view)
    );
    assert!(env.last_log().contains("failure report a crash cut short"));
    env.finish().await;
}

/// Every sandbox creation is cut short at the same point (its volume and network made, its image
/// being pulled from a registry that never answers): the restarted drover finishes or removes
/// each half-made machine, and removes the orphan of an earlier life and a stray job container.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_machine_creation_leaks_nothing() {
    // The sandboxes' image lives on a loopback "registry" that accepts and never answers.
    let registry = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let image = format!(
        "127.0.0.1:{}/drover-test/hang:1",
        registry.local_addr().unwrap().port()
    );
    let hang = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((connection, _)) = registry.accept().await {
            held.push(connection);
        }
    });
    let settings = Settings {
        idle_count: 3,
        image: image.clone(),
        ..Settings::pool()
    };
    let Some(mut env) = Env::new("recovery_creation", settings).await else {
        return;
    };
    // A half-made sandbox and a job container from some earlier life, unknown to drover's journal.
    let orphan = format!("{}e2e-orphan", env.prefix());
    make_half_sandbox(&env, &orphan).await;
    let stray = make_stray_job_container(&env, 999_999).await;

    env.spawn();
    // Die once all three creations wait for the image: each machine half made.
    let caught = within(PATIENCE, "three creations waiting for the image", async {
        loop {
            let objects = env.objects().await;
            let fresh = |names: &[String]| names.iter().filter(|n| !n.contains("orphan")).count();
            if fresh(&objects.volumes) == 3 && fresh(&objects.networks) == 3 {
                return objects;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    env.crash().await;
    assert!(
        env.sandboxes().await.is_empty(),
        "no creation got past the image: {caught:?}"
    );

    // The image is there now (as if the pull had finished): the restart can complete machines.
    tag_image(&env.docker, drover_docker::testing::BUSYBOX_IMAGE, &image).await;
    env.start().await;
    let warm = env.sandboxes_become(3).await;
    eventually(
        "the orphan and the stray job container removed",
        async || {
            let objects = env.objects().await;
            let gone = !objects.volumes.iter().any(|v| v.contains("orphan"))
                && !objects.networks.iter().any(|n| n.contains("orphan"))
                && !objects.containers.contains(&stray);
            gone.then_some(())
        },
    )
    .await;
    // Nothing but the three complete machines drover holds: no half-made one left beside them.
    let known = eventually("drover holds the three machines", async || {
        let status = env.status()?;
        let mut names: Vec<String> = status["machines"]
            .as_array()?
            .iter()
            .filter(|m| m["state"] == "idle")
            .filter_map(|m| m["name"].as_str().map(String::from))
            .collect();
        names.sort();
        (names.len() == 3).then_some(names)
    })
    .await;
    assert_eq!(
        known, warm,
        "the engine's sandboxes are the machines drover holds"
    );
    let objects = env.objects().await;
    assert_eq!(objects.volumes.len(), 3, "{objects:?}");
    assert_eq!(objects.networks.len(), 3, "{objects:?}");
    for name in &warm {
        assert!(
            objects.networks.contains(name),
            "{name}'s network: {objects:?}"
        );
    }
    let docker = env.docker.clone();
    env.finish().await;
    hang.abort();
    let _ = docker
        .remove_image(
            &image,
            None::<bollard::query_parameters::RemoveImageOptions>,
            None,
        )
        .await;
}

/// One machine's removal is held half done (its anchor container gone, its volume in use by a
/// container of the test's): drover dies there. The restarted drover finishes that removal and
/// the others once the volume is free, and leaves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_machine_removal_leaks_nothing() {
    let settings = Settings {
        idle_count: 3,
        idle_time: 0,
        ..Settings::pool()
    };
    let Some(mut env) = Env::new("recovery_removal", settings).await else {
        return;
    };
    env.start().await;
    let warm = env.sandboxes_become(3).await;
    let held = &warm[0];
    let volume = eventually("the machine's volume", async || {
        let objects = env.objects().await;
        objects
            .volumes
            .into_iter()
            .find(|v| v.starts_with(held.as_str()))
    })
    .await;
    let holder = hold_volume(&env, &volume).await;
    env.settings.idle_count = 0;
    env.write_config();
    env.signal("HUP");
    // Die once the held machine is half removed: its anchor gone, its volume still there, and its
    // removal failed at least once.
    within(PATIENCE, "the machine half removed", async {
        loop {
            let gone = !env.sandboxes().await.contains(held);
            let failed = env
                .last_log()
                .lines()
                .any(|l| l.contains("removing the machine failed") && l.contains(held.as_str()));
            if gone && failed && env.objects().await.volumes.contains(&volume) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    env.crash().await;
    assert!(!env.sandboxes().await.contains(held));
    assert!(env.objects().await.volumes.contains(&volume));

    release_volume(&env, &holder).await;
    env.start().await;
    eventually("every machine removed", async || {
        env.objects().await.is_empty().then_some(())
    })
    .await;
    env.finish().await;
}

/// A container of the test (not drover's: no `drover.runner` label, another name) that keeps
/// `volume` in use, so the engine refuses to remove it.
async fn hold_volume(env: &Env, volume: &str) -> String {
    use bollard::models::{ContainerCreateBody, HostConfig};
    use bollard::query_parameters::CreateContainerOptions;
    let name = format!("holder-{}", std::process::id());
    let body = ContainerCreateBody {
        image: Some(drover_docker::testing::BUSYBOX_IMAGE.to_string()),
        cmd: Some(vec!["true".to_string()]),
        host_config: Some(HostConfig {
            binds: Some(vec![format!("{volume}:/held")]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let options = CreateContainerOptions {
        name: Some(name.clone()),
        ..Default::default()
    };
    env.docker
        .create_container(Some(options), body)
        .await
        .expect("creating the volume's holder");
    name
}

async fn release_volume(env: &Env, holder: &str) {
    let options = bollard::query_parameters::RemoveContainerOptions {
        force: true,
        ..Default::default()
    };
    env.docker
        .remove_container(holder, Some(options))
        .await
        .expect("removing the volume's holder");
}

async fn tag_image(docker: &bollard::Docker, from: &str, to: &str) {
    let (repo, tag) = to.rsplit_once(':').expect("an image with a tag");
    let options = bollard::query_parameters::TagImageOptions {
        repo: Some(repo.to_string()),
        tag: Some(tag.to_string()),
    };
    docker
        .tag_image(from, Some(options))
        .await
        .expect("tagging the image");
}

/// A step container of a job drover's journal does not know (never started).
async fn make_stray_job_container(env: &Env, job: u64) -> String {
    use bollard::models::ContainerCreateBody;
    use bollard::query_parameters::CreateContainerOptions;
    let name = format!("drover-{}-job-{job}-0-script", env.short);
    let labels = std::collections::HashMap::from([
        ("drover.runner".to_string(), env.short.clone()),
        ("drover.job".to_string(), job.to_string()),
        ("drover.role".to_string(), "step".to_string()),
        ("drover.step.index".to_string(), "0".to_string()),
    ]);
    let body = ContainerCreateBody {
        image: Some(drover_docker::testing::BUSYBOX_IMAGE.to_string()),
        cmd: Some(vec!["true".to_string()]),
        labels: Some(labels),
        ..Default::default()
    };
    let options = CreateContainerOptions {
        name: Some(name.clone()),
        ..Default::default()
    };
    env.docker
        .create_container(Some(options), body)
        .await
        .expect("creating the stray job container");
    name
}

/// The volume and network of a sandbox, without its anchor: what a creation cut short leaves.
async fn make_half_sandbox(env: &Env, name: &str) {
    use bollard::models::{NetworkCreateRequest, VolumeCreateOptions};
    let labels = |role: &str| {
        std::collections::HashMap::from([
            ("drover.machine".to_string(), name.to_string()),
            ("drover.runner".to_string(), env.short.clone()),
            ("drover.role".to_string(), role.to_string()),
        ])
    };
    env.docker
        .create_volume(VolumeCreateOptions {
            name: Some(format!("{name}-builds")),
            labels: Some(labels("builds")),
            ..Default::default()
        })
        .await
        .expect("creating the orphan's volume");
    env.docker
        .create_network(NetworkCreateRequest {
            name: name.to_string(),
            labels: Some(labels("network")),
            ..Default::default()
        })
        .await
        .expect("creating the orphan's network");
}

/// Regression (issue #9, bug 2): the runner's token rotates (`reset_token`, expiry) and drover
/// restarts mid-job. Machines are named by the runner's URL and name, not its token: the restarted
/// daemon knows its machines, the job finishes and no machine is removed as lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_and_a_restart_keep_the_machines_and_the_job() {
    let Some(mut env) = Env::new("recovery_rotated", Settings::pool()).await else {
        return;
    };
    env.start().await;
    let id = env.enqueue(job("long", &["echo started", "sleep 6", "echo done"]));
    env.trace_shows(id, "\nstarted").await;
    let before = env.sandboxes().await;
    assert!(!before.is_empty());

    env.token = env
        .fake
        .rotate_runner_token(&env.token)
        .expect("the fake knows the runner");
    env.write_config();
    env.crash().await;
    env.start().await;

    let view = env.finished(id).await;
    assert_final(&view, JobStatus::Success, None, None);
    assert_eq!(lines(&view, "done"), 1, "{}", text(&view));
    let log = env.log();
    assert!(
        !log.contains("reason=lost") && !log.contains("reason=\"lost\""),
        "a machine was removed as lost:\n{log}"
    );
    let after = env.sandboxes().await;
    assert!(
        before.iter().all(|m| after.contains(m)),
        "the machines outlived the restart: {before:?} → {after:?}"
    );
    env.finish().await;
}
