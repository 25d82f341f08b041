//! Crash recovery: drover's side stops (the task is dropped, as in a kill -9), a new executor
//! resumes from the persisted cursor, and the job's output arrives exactly once.

use std::path::Path;

use bollard::query_parameters::InspectContainerOptions;
use drover_core::{FailureReason, Outcome};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::support::*;

/// A command that blocks the job until the test creates `/sync/go`, so the test controls whether
/// the step is still running when drover "crashes".
const WAIT_FOR_GO: &str = "while [ ! -f /sync/go ]; do sleep 0.05; done";

fn go(sync: &Path) {
    std::fs::write(sync.join("go"), b"").unwrap();
}

#[tokio::test]
async fn resume_mid_step_continues_the_output_exactly_once() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let sync = tempfile::tempdir().unwrap();
    let mut spec = with_after_script(
        spec(
            &runner,
            40,
            &[
                "echo mark-$((1))",
                WAIT_FOR_GO,
                "echo mark-$((2))",
                "echo mark-$((3))",
            ],
        ),
        &["echo after-$((4))"],
    );
    spec.volumes = vec![format!("{}:/sync", sync.path().display())];

    let (tx, mut rx) = mpsc::channel(64);
    let handle = executor().start(local(), spec.clone(), tx);
    let before = read_until(&mut rx, "mark-1").await;
    handle.abandon().await;
    let cursor = before.last().unwrap().cursor;

    // The crash left the step running on the engine.
    let step = format!("drover-{runner}-job-40-0-script");
    let state = docker
        .inspect_container(&step, None::<InspectContainerOptions>)
        .await
        .unwrap();
    assert_eq!(state.state.unwrap().running, Some(true));

    let (tx, rx) = mpsc::channel(64);
    let handle = executor().resume(local(), spec, Some(cursor), tx);
    go(sync.path());
    let (outcome, after) = finish(handle, rx).await;
    let before = Collected { chunks: before }.text();
    let after = after.text();
    let all = format!("{before}{after}");
    assert_eq!(outcome, Outcome::Success, "{all}");
    for mark in ["mark-1", "mark-2", "mark-3", "after-4"] {
        assert_eq!(count(&all, mark), 1, "{mark} exactly once in: {all}");
    }
    assert!(all.find("mark-2") < all.find("mark-3") && all.find("mark-3") < all.find("after-4"));
    assert!(after.contains("re-attached"), "{after}");
    assert_nothing_left(&docker, &runner).await;
}

#[tokio::test]
async fn resume_after_the_step_ended_while_drover_was_down_reports_its_exit_code() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let sync = tempfile::tempdir().unwrap();
    let mut spec = with_after_script(
        spec(
            &runner,
            41,
            &[
                "echo first-$((1))",
                WAIT_FOR_GO,
                "echo second-$((2))",
                "exit 3",
            ],
        ),
        &["echo after-$((4))"],
    );
    spec.volumes = vec![format!("{}:/sync", sync.path().display())];

    let (tx, mut rx) = mpsc::channel(64);
    let handle = executor().start(local(), spec.clone(), tx);
    let before = read_until(&mut rx, "first-1").await;
    handle.abandon().await;
    let cursor = before.last().unwrap().cursor;

    // The step finishes while nobody watches.
    go(sync.path());
    let step = format!("drover-{runner}-job-41-0-script");
    let mut wait = docker.wait_container(
        &step,
        None::<bollard::query_parameters::WaitContainerOptions>,
    );
    while wait.next().await.is_some() {}

    let (tx, rx) = mpsc::channel(64);
    let handle = executor().resume(local(), spec, Some(cursor), tx);
    let (outcome, after) = finish(handle, rx).await;
    let after = after.text();
    assert_eq!(
        outcome,
        Outcome::Failed {
            reason: FailureReason::ScriptFailure,
            exit_code: Some(3)
        },
        "{after}"
    );
    assert!(
        !after.contains("first-1"),
        "consumed output is not repeated: {after}"
    );
    assert_eq!(count(&after, "second-2"), 1, "{after}");
    assert_eq!(
        count(&after, "after-4"),
        1,
        "after_script still runs: {after}"
    );
    assert_nothing_left(&docker, &runner).await;
}

#[tokio::test]
async fn resume_without_a_cursor_replays_the_whole_output() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let sync = tempfile::tempdir().unwrap();
    let mut spec = spec(
        &runner,
        42,
        &["echo early-$((1))", WAIT_FOR_GO, "echo late-$((2))"],
    );
    spec.volumes = vec![format!("{}:/sync", sync.path().display())];
    let (tx, mut rx) = mpsc::channel(64);
    let handle = executor().start(local(), spec.clone(), tx);
    read_until(&mut rx, "early-1").await;
    handle.abandon().await;

    let (tx, rx) = mpsc::channel(64);
    let handle = executor().resume(local(), spec, None, tx);
    go(sync.path());
    let (outcome, after) = finish(handle, rx).await;
    let after = after.text();
    assert_eq!(outcome, Outcome::Success, "{after}");
    assert_eq!(
        (count(&after, "early-1"), count(&after, "late-2")),
        (1, 1),
        "{after}"
    );
    assert_nothing_left(&docker, &runner).await;
}

#[tokio::test]
async fn resume_of_a_job_whose_containers_are_gone_is_a_system_failure() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let (tx, rx) = mpsc::channel(64);
    let handle = executor().resume(local(), spec(&runner, 43, &["true"]), None, tx);
    let (outcome, out) = finish(handle, rx).await;
    assert_eq!(
        outcome,
        Outcome::Failed {
            reason: FailureReason::RunnerSystemFailure,
            exit_code: None
        }
    );
    assert!(out.text().contains("containers are gone"), "{}", out.text());
    assert_nothing_left(&docker, &runner).await;
}

#[tokio::test]
async fn reconciliation_lists_and_removes_an_abandoned_job() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let sync = tempfile::tempdir().unwrap();
    let mut spec = spec(&runner, 44, &["echo up-$((1))", WAIT_FOR_GO]);
    spec.volumes = vec![format!("{}:/sync", sync.path().display())];
    let (tx, mut rx) = mpsc::channel(64);
    let handle = executor().start(local(), spec, tx);
    read_until(&mut rx, "up-1").await;
    handle.abandon().await;

    let engine = drover_docker::EngineConfig::local();
    assert_eq!(
        executor().list_jobs(&engine, &runner).await.unwrap(),
        vec![44]
    );
    executor().cleanup(&local(), &runner, 44).await.unwrap();
    executor().cleanup(&local(), &runner, 44).await.unwrap();
    assert!(
        executor()
            .list_jobs(&engine, &runner)
            .await
            .unwrap()
            .is_empty()
    );
    assert_nothing_left(&docker, &runner).await;
}

#[tokio::test]
async fn a_job_is_resumed_under_the_label_it_started_with_whatever_the_runners_is_now() {
    let Some(docker) = engine().await else { return };
    let earlier = unique_runner();
    let sync = tempfile::tempdir().unwrap();
    let mut spec = spec(
        &earlier,
        44,
        &["echo one-$((1))", WAIT_FOR_GO, "echo two-$((2))"],
    );
    spec.volumes = vec![format!("{}:/sync", sync.path().display())];

    let (tx, mut rx) = mpsc::channel(64);
    let handle = executor().start(local(), spec.clone(), tx);
    let before = read_until(&mut rx, "one-1").await;
    handle.abandon().await;
    let cursor = before.last().unwrap().cursor;

    // An upgrade changed the runner's label; the job's containers keep the one they started with,
    // and the daemon (which records it) resumes the job under it.
    let now = unique_runner();
    let (tx, rx) = mpsc::channel(64);
    spec.runner = now.to_string();
    let elsewhere = executor().resume(local(), spec.clone(), Some(cursor), tx);
    let (outcome, _) = finish(elsewhere, rx).await;
    assert_eq!(
        outcome,
        Outcome::Failed {
            reason: FailureReason::RunnerSystemFailure,
            exit_code: None
        },
        "no container carries the new label"
    );
    spec.runner = earlier.to_string();
    let (tx, rx) = mpsc::channel(64);
    let handle = executor().resume(local(), spec, Some(cursor), tx);
    go(sync.path());
    let (outcome, after) = finish(handle, rx).await;
    let after = after.text();
    assert_eq!(outcome, Outcome::Success, "{after}");
    assert_eq!(count(&after, "two-2"), 1, "{after}");
    assert_nothing_left(&docker, &earlier).await;
    assert_nothing_left(&docker, &now).await;
}
