//! The environment the executor gives each step: `CI_JOB_STATUS` per step.

use drover_core::{FailureReason, Outcome};

use crate::support::*;

#[tokio::test]
async fn ci_job_status_is_running_in_the_script_and_the_outcome_in_after_script() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let ok = with_after_script(
        spec(&runner, 60, &["echo script-sees-$CI_JOB_STATUS"]),
        &["echo after-sees-$CI_JOB_STATUS"],
    );
    let (outcome, out) = run_job(local(), ok).await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(out.contains("\nscript-sees-running\n"), "{out}");
    assert!(out.contains("\nafter-sees-success\n"), "{out}");

    let failing = with_after_script(
        spec(&runner, 61, &["exit 4"]),
        &["echo after-sees-$CI_JOB_STATUS"],
    );
    let (outcome, out) = run_job(local(), failing).await;
    assert_eq!(
        outcome,
        Outcome::Failed {
            reason: FailureReason::ScriptFailure,
            exit_code: Some(4)
        },
        "{out}"
    );
    assert!(out.contains("\nafter-sees-failed\n"), "{out}");
    assert_nothing_left(&docker, &runner).await;
}

#[tokio::test]
async fn image_and_service_entrypoints_and_commands_are_honoured() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let mut spec = spec(
        &runner,
        62,
        &[
            "echo script-ran-$((5 + 5))",
            "for i in 1 2 3 4 5 6 7 8 9 10; do wget -q -O- http://svc/ && break; sleep 0.2; done",
        ],
    );
    // The image's entrypoint wraps every step: it must hand over to the step's command.
    spec.image.entrypoint = Some(vec![
        "sh".into(),
        "-c".into(),
        "echo entrypoint-ran-$((2 * 2)); exec \"$@\"".into(),
        "entrypoint".into(),
    ]);
    let mut image = drover_docker::ImageSpec::new(drover_docker::testing::BUSYBOX_IMAGE);
    image.pull_policy = vec![drover_docker::PullPolicy::Never];
    image.entrypoint = Some(vec!["sh".into(), "-c".into()]);
    spec.services = vec![drover_docker::ServiceSpec {
        image,
        aliases: vec!["svc".into()],
        command: Some(vec![
            "mkdir -p /w && echo service-$SVC_WORD > /w/index.html && exec httpd -f -p 80 -h /w"
                .into(),
        ]),
        variables: vec![drover_docker::Variable::new("SVC_WORD", "answered")],
    }];
    let (outcome, out) = run_job(local(), spec).await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(out.contains("\nentrypoint-ran-4\n"), "{out}");
    assert!(out.contains("\nscript-ran-10\n"), "{out}");
    assert!(out.contains("service-answered"), "{out}");
    assert_nothing_left(&docker, &runner).await;
}
