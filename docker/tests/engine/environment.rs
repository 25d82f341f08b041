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
