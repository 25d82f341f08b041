//! Jobs on the plain engine: outcomes, steps, variables, timeouts, cancel, abort, pull policy.

use std::time::Duration;

use drover_core::{FailureReason, Outcome};
use drover_docker::{PullPolicy, StepName, Variable};
use tokio::sync::mpsc;

use crate::support::*;

#[tokio::test]
async fn a_successful_job_streams_its_output_and_leaves_nothing() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let script = [
        "echo hello-$((40 + 2))",
        "pwd",
        "echo to-stderr >&2",
        "echo kept > /cache/f",
    ];
    let mut spec = with_after_script(
        spec(&runner, 1, &script),
        &["echo after-$((1 + 1))", "cat /cache/f"],
    );
    // A bare path gets a volume of the job's own, shared by its steps.
    spec.volumes = vec!["/cache".to_string()];
    let (outcome, out) = run_job(local(), spec).await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(
        out.contains("$ echo hello-$((40 + 2))"),
        "commands are echoed: {out}"
    );
    assert_eq!(count(&out, "hello-42"), 1, "{out}");
    assert!(
        out.contains("/builds/group/project\n"),
        "runs in the project dir: {out}"
    );
    assert!(
        out.contains("to-stderr"),
        "stderr is part of the trace: {out}"
    );
    assert!(
        out.contains("after-2"),
        "after_script runs after success: {out}"
    );
    assert!(out.find("hello-42") < out.find("after-2"));
    assert!(
        out.contains("\nkept\n"),
        "the steps share the /cache volume: {out}"
    );
    assert!(out.contains("Job succeeded"), "{out}");
    assert_nothing_left(&docker, &runner).await;
}

#[tokio::test]
async fn a_failing_command_fails_the_job_with_its_exit_code_and_after_script_still_runs() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let spec = with_after_script(
        spec(
            &runner,
            2,
            &["echo before", "exit 7", "echo not-$((0))-reached"],
        ),
        &["echo cleanup-$((2 + 2))"],
    );
    let (outcome, out) = run_job(local(), spec).await;
    assert_eq!(
        outcome,
        Outcome::Failed {
            reason: FailureReason::ScriptFailure,
            exit_code: Some(7)
        },
        "{out}"
    );
    assert!(
        !out.contains("not-0-reached"),
        "the script stops at the failure: {out}"
    );
    assert!(
        out.contains("cleanup-4"),
        "after_script runs on failure: {out}"
    );
    assert!(out.contains("exit code 7"), "{out}");
    assert_nothing_left(&docker, &runner).await;
}

#[tokio::test]
async fn steps_follow_their_when_and_after_script_failures_do_not_fail_the_job() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let mut spec = spec(&runner, 3, &["echo main"]);
    let mut on_failure = step(
        StepName::AfterScript,
        &["echo on-failure-$((1))"],
        Duration::from_secs(10),
    );
    on_failure.when = drover_docker::When::OnFailure;
    spec.steps.push(on_failure);
    spec.steps.push(step(
        StepName::AfterScript,
        &["echo always-$((2))", "exit 4"],
        Duration::from_secs(10),
    ));
    let (outcome, out) = run_job(local(), spec).await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(
        !out.contains("on-failure-1"),
        "on_failure steps skip after success: {out}"
    );
    assert!(out.contains("always-2"), "{out}");
    assert!(
        out.contains("after_script failed with exit code 4"),
        "{out}"
    );
    assert_nothing_left(&docker, &runner).await;
}

#[tokio::test]
async fn masked_and_file_variables_reach_the_job() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let mut spec = spec(
        &runner,
        4,
        &[
            "echo \"secret=$MY_SECRET\"",
            "echo \"file at $MY_FILE\"",
            "cat \"$MY_FILE\"",
        ],
    );
    // A masked variable in GitLab: the executor passes it on like any other.
    let secret = Variable::new("MY_SECRET", "s3cr3t-v4lue");
    let mut file = Variable::new("MY_FILE", "line-one\nfile-content-42\n");
    file.file = true;
    spec.variables = vec![Variable::new("PLAIN", "p"), secret, file];
    let (outcome, out) = run_job(local(), spec).await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    // Masking happens downstream in the trace buffer: the executor delivers the job's own output.
    assert!(out.contains("secret=s3cr3t-v4lue"), "{out}");
    assert!(
        out.contains("file at /.drover/vars/MY_FILE"),
        "a file variable holds a path: {out}"
    );
    assert!(
        out.contains("line-one\nfile-content-42\n"),
        "the file holds the value: {out}"
    );
    assert_nothing_left(&docker, &runner).await;
}

#[tokio::test]
async fn the_job_timeout_stops_the_script_and_after_script_still_runs() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let mut spec = with_after_script(
        spec(
            &runner,
            5,
            &["echo started", "sleep 30", "echo overslept-$((1))"],
        ),
        &["echo after-timeout-$((3))"],
    );
    spec.timeout = Duration::from_secs(2);
    let (outcome, out) = run_job(local(), spec).await;
    assert_eq!(
        outcome,
        Outcome::Failed {
            reason: FailureReason::JobExecutionTimeout,
            exit_code: None
        },
        "{out}"
    );
    assert!(!out.contains("overslept-1"), "{out}");
    assert!(
        out.contains("after-timeout-3"),
        "after_script runs after a timeout: {out}"
    );
    assert!(
        out.contains("execution took longer than 2 seconds"),
        "{out}"
    );
    assert_nothing_left(&docker, &runner).await;
}

#[tokio::test]
async fn a_step_timeout_on_after_script_is_only_a_warning() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let mut spec = spec(&runner, 6, &["echo ok"]);
    spec.steps.push(step(
        StepName::AfterScript,
        &["sleep 30"],
        Duration::from_secs(1),
    ));
    let (outcome, out) = run_job(local(), spec).await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(out.contains("after_script timed out"), "{out}");
    assert_nothing_left(&docker, &runner).await;
}

#[tokio::test]
async fn cancel_stops_the_script_runs_after_script_and_reports_canceled() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let spec = with_after_script(
        spec(
            &runner,
            7,
            &["echo running-$((1))", "sleep 30", "echo not-$((2))-reached"],
        ),
        &["echo after-cancel-$((3))"],
    );
    let (tx, mut rx) = mpsc::channel(64);
    let handle = executor().start(local(), spec, tx);
    read_until(&mut rx, "running-1").await;
    handle.control().cancel();
    let (outcome, rest) = finish(handle, rx).await;
    let out = rest.text();
    assert_eq!(outcome, Outcome::Canceled, "{out}");
    assert!(!out.contains("not-2-reached"), "{out}");
    assert!(
        out.contains("after-cancel-3"),
        "after_script runs on cancel: {out}"
    );
    assert_nothing_left(&docker, &runner).await;
}

#[tokio::test]
async fn abort_kills_everything_without_after_script() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let spec = with_after_script(
        spec(&runner, 8, &["echo running-$((1))", "sleep 30"]),
        &["echo after-$((5))"],
    );
    let (tx, mut rx) = mpsc::channel(64);
    let handle = executor().start(local(), spec, tx);
    read_until(&mut rx, "running-1").await;
    handle.control().abort(FailureReason::RunnerSystemFailure);
    let (outcome, rest) = finish(handle, rx).await;
    assert_eq!(
        outcome,
        Outcome::Failed {
            reason: FailureReason::RunnerSystemFailure,
            exit_code: None
        }
    );
    assert!(!rest.text().contains("after-5"), "{}", rest.text());
    assert_nothing_left(&docker, &runner).await;
}

#[tokio::test]
async fn pull_policy_never_with_a_missing_image_is_an_image_pull_failure() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let mut spec = spec(&runner, 9, &["true"]);
    spec.image.name = "drover-test/not-there:0".to_string();
    let (outcome, out) = run_job(local(), spec).await;
    assert_eq!(
        outcome,
        Outcome::Failed {
            reason: FailureReason::ImagePullFailure,
            exit_code: None
        },
        "{out}"
    );
    assert!(
        out.contains("drover-test/not-there:0") && out.contains("\"never\""),
        "{out}"
    );
    assert_nothing_left(&docker, &runner).await;
}

#[tokio::test]
async fn a_failed_pull_is_an_image_pull_failure() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let mut spec = spec(&runner, 10, &["true"]);
    // A registry address on loopback where nothing listens: the pull fails at once.
    spec.image.name = "127.0.0.1:9/drover/none:1".to_string();
    spec.image.pull_policy = vec![PullPolicy::IfNotPresent];
    let (outcome, out) = run_job(local(), spec).await;
    assert_eq!(
        outcome,
        Outcome::Failed {
            reason: FailureReason::ImagePullFailure,
            exit_code: None
        },
        "{out}"
    );
    assert!(
        out.contains("Pulling docker image 127.0.0.1:9/drover/none:1"),
        "{out}"
    );
    assert_nothing_left(&docker, &runner).await;
}

#[tokio::test]
async fn always_falls_back_to_if_not_present_when_the_pull_fails() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    // Tag the local test image under a loopback registry name: a pull of it must fail.
    let local_name = "127.0.0.1:9/drover/busybox";
    let options = bollard::query_parameters::TagImageOptions {
        repo: Some(local_name.to_string()),
        tag: Some(runner.to_string()),
    };
    docker
        .tag_image(drover_docker::testing::BUSYBOX_IMAGE, Some(options))
        .await
        .unwrap();
    let image = format!("{local_name}:{runner}");
    let mut spec = spec(&runner, 11, &["echo fell-back-$((1))"]);
    spec.image.name = image.clone();
    spec.image.pull_policy = vec![PullPolicy::Always, PullPolicy::IfNotPresent];
    let (outcome, out) = run_job(local(), spec).await;
    let untag = bollard::query_parameters::RemoveImageOptions {
        noprune: true,
        ..Default::default()
    };
    docker
        .remove_image(&image, Some(untag), None)
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(
        out.contains("trying pull policy \"if-not-present\""),
        "{out}"
    );
    assert!(out.contains("fell-back-1"), "{out}");
    assert_nothing_left(&docker, &runner).await;
}

#[tokio::test]
async fn a_step_timeout_is_reported_with_the_steps_own_limit() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let mut spec = spec(&runner, 12, &["echo started", "sleep 30"]);
    spec.steps[0].timeout = Duration::from_secs(2);
    let (outcome, out) = run_job(local(), spec).await;
    assert_eq!(
        outcome,
        Outcome::Failed {
            reason: FailureReason::JobExecutionTimeout,
            exit_code: None
        },
        "{out}"
    );
    assert!(
        out.contains("execution took longer than 2 seconds"),
        "the step's limit, not the job's 60 s: {out}"
    );
    assert_nothing_left(&docker, &runner).await;
}

#[tokio::test]
async fn variables_reach_the_script_not_the_containers_environment() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let mut spec = spec(
        &runner,
        13,
        &[
            "echo \"plain=$PLAIN big=${#BIG}\"",
            // Exported, BIG is too long for any program the script starts.
            "unset BIG",
            "echo \"in-env=$(tr '\\0' '\\n' < /proc/1/environ | grep -c '^PLAIN=')\" || true",
            "tr '\\0' '\\n' < /proc/1/environ | grep '^my-var='",
        ],
    );
    spec.variables = vec![
        Variable::new("PLAIN", "p"),
        Variable::new("my-var", "dash"),
        Variable::new("BIG", "a".repeat(1 << 20)),
    ];
    let (outcome, out) = run_job(local(), spec).await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(out.contains("plain=p big=1048576\n"), "{out}");
    assert!(
        out.contains("in-env=0\n"),
        "the script exports PLAIN; the container's environment has none of it: {out}"
    );
    assert!(
        out.contains("\nmy-var=dash\n"),
        "a name no shell can export stays in the environment: {out}"
    );
    assert!(
        out.contains("the variable BIG is 1048580 bytes as KEY=value")
            && out.contains("over 131071 bytes"),
        "{out}"
    );
    assert_nothing_left(&docker, &runner).await;
}
